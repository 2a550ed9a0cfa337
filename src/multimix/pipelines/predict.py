"""Predictions a clinician can look at: masks, overlays, explanation maps and a CSV.

``predict_paths`` runs a trained run on image files (PNG, JPEG, DICOM) or folders of them and
writes, per image, the lung mask at the image's own size (and, for a run that segments
several structures, one mask per structure), an overlay (outline + class and probability, or
the findings present for a multi-label run), the requested explanation heatmaps, and one row of
``predictions.csv``. A file that cannot be read is reported in ``failures.csv`` and the others
go on. What differs between tasks (columns, captions, maps) is the task's
(:meth:`multimix.tasks.base.Task.prediction_output`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_erosion

from multimix.core.errors import ConfigError, DataError, printable_path
from multimix.data.io import (
    IMAGE_SUFFIXES,
    image_stem,
    looks_like_image,
    read_image,
    write_png,
)
from multimix.models.adapt import AdaptSpec

__all__ = ["OVERLAY_MAX_SIDE", "PredictSummary", "collect_inputs", "predict_paths"]

OVERLAY_MAX_SIDE = 1024
"""Overlays are written at the image's size, shrunk to this many pixels on the long side."""

_OUTLINE_RGB = (0, 230, 120)
_HEAT_ALPHA = 0.7  # heatmap opacity where the map is 1; it falls off with the map's value


@dataclass
class PredictSummary:
    """What ``predict_paths`` did: how many images were predicted, and which failed why."""

    n_ok: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    notes: list[str] = field(default_factory=list)  # said once, e.g. thresholds that fell back

    @property
    def n_failed(self) -> int:
        return len(self.failures)


_OUTPUT_DIRS = ("masks", "overlays", "explanations", "regions")  # what predict writes into --out
_SHOWN = 5


def collect_inputs(
    inputs: list[Path], out: Path | None = None, notes: list[str] | None = None
) -> list[Path]:
    """Image files named directly, and the images in named folders and their sub-folders.

    Files named directly are always kept (reading them decides whether they are images); in a
    folder, only files that look like images (:func:`~multimix.data.io.looks_like_image`, so
    DICOM without an extension too) directly in it or one sub-folder down are taken, in name
    order. A folder without any is an error.

    What is not a radiograph is left out, and said in ``notes``: in a data folder of the shared
    layout (it has ``images/``) only ``images/`` is read, never its ``masks/``; the output
    folder ``out`` and the output of any earlier prediction (a folder with ``predictions.csv``)
    are skipped, so predicting twice into the input folder never predicts its own masks.
    """
    notes = notes if notes is not None else []
    paths: list[Path] = []
    seen: set[Path] = set()
    outputs = _output_dirs(out)

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            paths.append(path)

    for item in map(Path, inputs):
        if not item.is_dir():
            add(item)
            continue
        found, skipped, others = _folder_inputs(item, outputs)
        if skipped:
            shown = ", ".join(printable_path(p) for p in skipped)
            notes.append(f"skipped {shown} (not inputs: masks or prediction output)")
        if others:
            names = ", ".join(printable_path(p.name) for p in others[:_SHOWN])
            more = f" and {len(others) - _SHOWN} more" if len(others) > _SHOWN else ""
            notes.append(
                f"skipped {len(others)} non-image file(s) in {printable_path(item)}: {names}{more}"
            )
        if not found:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DataError(item, f"no image files ({suffixes}) in this folder or its sub-folders")
        if (item / "images").is_dir():
            where = printable_path(item / "images")
            notes.append(f"predicting {len(found)} image(s) from {where} (shared layout)")
        for path in found:
            add(path)
    return paths


def _output_dirs(out: Path | None) -> set[Path]:
    """The folders this prediction writes images into (resolved)."""
    if out is None:
        return set()
    root = Path(out).resolve()
    return {root, *(root / name for name in _OUTPUT_DIRS)}


def _is_prediction_output(folder: Path) -> bool:
    return (folder / "predictions.csv").is_file() and (folder / "masks").is_dir()


def _folder_inputs(item: Path, outputs: set[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """``(images, skipped folders, other files)`` of one input folder."""
    if (item / "images").is_dir():  # shared layout: the radiographs are in images/ only
        found, others = _images_in(item / "images")
        skipped = [item / name for name in ("masks",) if (item / name).is_dir()]
        return found, skipped, others
    own = item.resolve() in outputs or _is_prediction_output(item)
    found, others = _images_in(item)
    skipped: list[Path] = []
    for sub in _subfolders(item):
        if (
            sub.resolve() in outputs
            or _is_prediction_output(sub)
            or (own and sub.name in _OUTPUT_DIRS)
        ):
            skipped.append(sub)
            continue
        images, rest = _images_in(sub)
        found += images
        others += rest
    return found, skipped, others


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(folder, f"cannot list folder: {exc.strerror or exc}") from None


def _images_in(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(images, other visible files)`` directly in ``folder``, sorted."""
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(folder, f"cannot list folder: {exc.strerror or exc}") from None
    images = [p for p in files if looks_like_image(p)]
    chosen = set(images)
    others = [p for p in files if p not in chosen and p.name not in _KNOWN_FILES]
    return images, others


_KNOWN_FILES = frozenset({"predictions.csv", "failures.csv", "labels.csv", "meta.csv"})


def unique_stems(paths: list[Path]) -> list[str]:
    """Output names: each file's stem, with ``-2``, ``-3``, ... for repeats (case-insensitive,
    so the files stay distinct on case-insensitive file systems too)."""
    used: set[str] = set()
    names = []
    for path in paths:
        stem = image_stem(path) or "image"
        name, n = stem, 1
        while name.casefold() in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name.casefold())
        names.append(name)
    return names


def _reason(exc: DataError) -> str:
    """The message of a DataError without the path prefix it starts with."""
    text, prefix = str(exc), f"{exc.path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def predict_paths(
    run: Path,
    inputs: list[Path],
    out: Path,
    explain: list[str] | tuple[str, ...] = (),
    batch_size: int = 16,
    device: str = "auto",
    backend: str = "torch",
    onnx_path: Path | None = None,
    dicom_seg: bool = False,
    checkpoint: str = "best",
    adapt: bool | AdaptSpec = False,
    precision: str = "fp32",
) -> PredictSummary:
    """Predict every image in ``inputs`` with the run's best checkpoint; write results in ``out``.

    Writes ``masks/<name>.png`` (lungs, else the first structure; 0/255, at the image's own
    size), with several structures also ``masks/<structure>/<name>.png`` for each,
    ``overlays/<name>.png``, ``explanations/<method>/<name>.png`` for each method in
    ``explain``, ``predictions.csv`` (``image, predicted_class, p_<class>...,
    lung_area_fraction, mask_path`` and ``<structure>_area_fraction, <structure>_mask_path``
    per other structure; paths relative to ``out``) and, when some failed, ``failures.csv``
    (``image, reason``).

    A multi-label run writes ``image, predicted_findings, p_<finding>..., <finding>...`` (0/1 at
    the thresholds of ``RUN/thresholds.json``), the mask columns, and ``zones`` when it has a
    localization head; its maps go to ``explanations/<method>/<finding>/<name>.png`` (see
    :mod:`multimix.tasks.findings_output`).

    A run whose method judges images on a region of them (``kacl``) also writes
    ``regions/<name>.png`` and that region's columns (:mod:`multimix.pipelines.regions`).
    With ``adapt`` (``True`` or a :class:`~multimix.models.adapt.AdaptSpec`) the batch-norm
    statistics are first re-estimated on the inputs; a run with a
    feature reference warns when the inputs are unlike its training data.

    The predictions themselves are :class:`multimix.api.Model`'s (``backend="onnx"`` runs the
    exported file). With ``dicom_seg``, each DICOM input also gets ``dicom/<name>.seg.dcm`` (the
    lung mask as a DICOM Segmentation referencing it) and ``dicom/<name>.json`` (its findings).

    Raises:
        ConfigError: an unknown explanation method or a batch size below 1.
        DataError: an input folder without images.
        CheckpointError: the run cannot be loaded.
    """
    from multimix.api import EXPLAIN_METHODS, load
    from multimix.core.atomic import atomic_write_text
    from multimix.core.progress import progress_bar
    from multimix.core.writable import check_writable_dir

    methods = list(dict.fromkeys(m.strip() for m in explain if m.strip()))
    unknown = [m for m in methods if m not in EXPLAIN_METHODS]
    if unknown:
        raise ConfigError(
            f"unknown explanation method {unknown[0]!r}; choose from {', '.join(EXPLAIN_METHODS)}"
        )
    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if methods and backend != "torch":
        raise ConfigError("--explain needs --backend torch: the ONNX file holds the forward pass")
    check_writable_dir(out)
    summary = PredictSummary()
    paths = collect_inputs(inputs, Path(out), summary.notes)
    names = unique_stems(paths)
    model = load(Path(run), checkpoint, device, backend, onnx_path, precision)
    structures = list(model.structures)
    summary.notes += _look_first(model, paths, adapt)
    summary.notes += model.notes
    explain_dirs = model.output.explain_folders(methods)
    out = Path(out)
    folders = ["masks", "overlays", *explain_dirs]
    if len(structures) > 1:
        folders += [f"masks/{s}" for s in structures]
    if dicom_seg:
        folders.append("dicom")
    try:
        for folder in folders:
            (out / folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(out, f"cannot create the output folder: {exc.strerror or exc}") from None

    rows: list[list[str]] = []
    not_dicom = 0
    with progress_bar("predicting", total=len(paths)) as advance:
        for start in range(0, len(paths), batch_size):
            batch = []
            for path, name in zip(
                paths[start : start + batch_size], names[start : start + batch_size], strict=True
            ):
                try:
                    if printable_path(path) != str(path):  # would crash predictions.csv
                        raise DataError(path, "file name is not valid UTF-8; rename the file")
                    image = read_image(path)
                except DataError as exc:
                    summary.failures.append((exc.path, _reason(exc)))
                    continue
                batch.append((path, name, image))
            if batch:
                preds = model.predict_images(
                    [img for _, _, img in batch], methods, [name for _, name, _ in batch]
                )
                rows += _write_batch(batch, preds, structures, out, set(explain_dirs), model)
                if dicom_seg:
                    not_dicom += _write_dicom(batch, preds, out, model, summary)
                summary.n_ok += len(batch)
            advance(min(batch_size, len(paths) - start))
    if not_dicom:
        summary.notes.append(f"--dicom-seg: {not_dicom} input(s) are not DICOM; no SEG for them")

    header = ["image", *model.output.header(), *_mask_header(structures),
              *model.output.trailing_header(), *model.regions.header()]  # fmt: skip
    summary.notes += sorted(model.regions.captions)
    atomic_write_text(out / "predictions.csv", _csv([header, *rows]))
    failures_csv = out / "failures.csv"
    if summary.failures:
        atomic_write_text(failures_csv, _csv([["image", "reason"], *summary.failures]))
    elif failures_csv.exists():
        failures_csv.unlink()  # from an earlier prediction into the same folder
    return summary


def _csv(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _look_first(model, paths: list[Path], adapt: bool | AdaptSpec) -> list[str]:
    """:meth:`multimix.api.Model.prepare` on the inputs (the shift warning, ``adapt``); one
    read of them, and none at all when the run has no feature reference and ``adapt`` is off.
    Files that fail here fail again, with their reason, in the main loop."""
    from multimix.models.shift import read_reference

    if not adapt and read_reference(model.run) is None:
        return []
    images = []
    for path in paths:
        try:
            images.append(read_image(path))
        except DataError:
            continue
    return model.prepare(images, adapt)


def _write_batch(
    batch: list[tuple[Path, str, np.ndarray]],
    preds: list,
    structures: list[str],
    out: Path,
    explain_dirs: set[str],
    model,
) -> list[list[str]]:
    """Write one batch's masks, overlays and maps; its CSV rows back.

    A map goes to ``explanations/<method>/<class>/`` where the task declared that folder
    (:meth:`~multimix.tasks.base.PredictionOutput.explain_folders`), else to
    ``explanations/<method>/``.
    """
    rows = []
    for (path, name, image), pred in zip(batch, preds, strict=True):
        mask, mask_cells = _write_masks(out, name, pred.masks, structures)
        write_png(out / "overlays" / f"{name}.png", _overlay(image, mask, pred.label))
        for method, maps in pred.explanations.items():
            for target, attr in maps.items():
                folder = out / "explanations" / method
                if f"explanations/{method}/{target}" in explain_dirs:
                    folder = folder / target
                write_png(folder / f"{name}.png", _heatmap(image, attr))
        extra = _write_region(out, name, image, pred, model.regions.names)
        rows.append([str(path), *pred.cells, *mask_cells, *pred.trailing, *extra])
    return rows


def _write_region(out: Path, name: str, image: np.ndarray, pred, names: list[str]) -> list[str]:
    """A method's region of one image: ``regions/<name>.png`` (outlined) and its CSV cells."""
    from multimix.pipelines.regions import FOLDER, outlined

    if pred.region_mask is None:
        return []
    rel = f"{FOLDER}/{name}.png"
    (out / FOLDER).mkdir(parents=True, exist_ok=True)
    write_png(out / rel, outlined(image, pred.region_mask))
    values = pred.region_values
    return [f"{float(pred.region_mask.mean()):.6f}", rel, *(f"{values[n]:.6g}" for n in names)]


def _write_dicom(batch, preds, out: Path, model, summary: PredictSummary) -> int:
    """DICOM SEG + findings sidecar for each DICOM input of the batch; how many were not."""
    from multimix.pipelines.dicom_out import read_source_dataset, write_dicom_result

    skipped = 0
    for (path, name, _), pred in zip(batch, preds, strict=True):
        ds = read_source_dataset(path)
        if ds is None:
            skipped += 1
            continue
        try:
            write_dicom_result(pred, ds, out / "dicom" / f"{name}.seg.dcm", model)
        except DataError as exc:
            summary.notes.append(f"--dicom-seg: {exc}")
    return skipped


def _first_structure(structures: list[str]) -> int:
    """The channel written as ``masks/<name>.png``: the lungs if segmented, else the first."""
    from multimix.explain.report_metrics import lung_index

    return lung_index(tuple(structures)) or 0


def _mask_header(structures: list[str]) -> list[str]:
    first = _first_structure(structures)
    header = ["lung_area_fraction", "mask_path"]
    for k, structure in enumerate(structures):
        if k != first:
            header += [f"{structure}_area_fraction", f"{structure}_mask_path"]
    return header


def _write_masks(
    out: Path, name: str, masks: dict[str, np.ndarray], structures: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Write one image's masks (at its own size); back: the first structure's mask and the
    cells of :func:`_mask_header`. With several structures, each also goes to its own folder."""
    first = structures[_first_structure(structures)]
    write_png(out / "masks" / f"{name}.png", masks[first])
    cells = [f"{float(masks[first].mean()):.6f}", f"masks/{name}.png"]
    if len(structures) > 1:
        for structure in structures:
            write_png(out / "masks" / structure / f"{name}.png", masks[structure])
            if structure != first:
                cells += [f"{float(masks[structure].mean()):.6f}", f"masks/{structure}/{name}.png"]
    return masks[first], cells


def _gray_rgb(image: np.ndarray) -> np.ndarray:
    gray = np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _overlay(image: np.ndarray, mask: np.ndarray, label: str) -> np.ndarray:
    """Gray image, mask outline in colour and ``label`` in the top-left corner (uint8 RGB)."""
    height, width = image.shape
    scale = min(1.0, OVERLAY_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
        height, width = image.shape
    thickness = max(1, round(max(height, width) / 256))
    outline = mask & ~binary_erosion(mask, iterations=thickness)
    rgb = _gray_rgb(image)
    rgb[outline] = _OUTLINE_RGB
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    size = max(10, round(max(height, width) / 24))
    font = _font(size)
    pad = max(1, round(max(height, width) / 128))
    left, top, right, bottom = draw.textbbox((pad, pad), label, font=font)
    while size > 10 and right - left > width - 4 * pad:  # long (multi-label) text: shrink
        size = max(10, min(size - 1, int(size * (width - 4 * pad) / (right - left))))
        font = _font(size)
        left, top, right, bottom = draw.textbbox((pad, pad), label, font=font)
    draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=(0, 0, 0))
    draw.text((pad, pad), label, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _heatmap(image: np.ndarray, attr: np.ndarray) -> np.ndarray:
    """``inferno`` colours of ``attr`` over the gray image, more opaque where ``attr`` is high.

    The colormap is applied as a 256-entry table on 8-bit levels, so a full-size radiograph
    costs a few bytes per pixel rather than matplotlib's float64 RGBA.
    """
    from matplotlib import colormaps

    lut = colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)
    levels = np.rint(np.clip(attr, 0.0, 1.0) * 255).astype(np.uint8)
    alpha = (_HEAT_ALPHA * levels.astype(np.float32) / 255)[..., None]
    gray = np.clip(image, 0.0, 1.0).astype(np.float32)[..., None]
    blend = (1.0 - alpha) * gray + alpha * lut[levels]
    return np.rint(np.clip(blend, 0.0, 1.0) * 255).astype(np.uint8)
