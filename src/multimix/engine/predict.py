"""Predictions a clinician can look at: masks, overlays, explanation maps and a CSV.

``predict_paths`` runs a trained run on image files (PNG, JPEG, DICOM) or folders of them and
writes, per image, the lung mask at the image's own size, an overlay (outline + class and
probability), the requested explanation heatmaps, and one row of ``predictions.csv``. A file
that cannot be read is reported in ``failures.csv`` and the others go on.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_erosion

from multimix.data.io import IMAGE_SUFFIXES, is_image_file, read_image, resize_image, write_png
from multimix.errors import ConfigError, DataError

__all__ = ["OVERLAY_MAX_SIDE", "PredictSummary", "collect_inputs", "predict_paths"]

OVERLAY_MAX_SIDE = 1024
"""Overlays are written at the image's size, shrunk to this many pixels on the long side."""

_OUTLINE_RGB = (0, 230, 120)
_HEAT_ALPHA = 0.7  # heatmap opacity where the map is 1; it falls off with the map's value
_MASK_THRESHOLD = 0.5


@dataclass
class PredictSummary:
    """What ``predict_paths`` did: how many images were predicted, and which failed why."""

    n_ok: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def n_failed(self) -> int:
        return len(self.failures)


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Image files named directly, and the images in named folders and their sub-folders.

    Files named directly are always kept (reading them decides whether they are images); in a
    folder, only files that look like images (:func:`is_image_file`) directly in it or one
    sub-folder down are taken, in name order. A folder without any is an error.
    """
    paths: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            paths.append(path)

    for item in map(Path, inputs):
        if not item.is_dir():
            add(item)
            continue
        found = _images_in(item)
        for sub in sorted(p for p in item.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found += _images_in(sub)
        if not found:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            raise DataError(item, f"no image files ({suffixes}) in this folder or its sub-folders")
        for path in found:
            add(path)
    return paths


def _images_in(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
    except OSError as exc:
        raise DataError(folder, f"cannot list folder: {exc.strerror or exc}") from None


def unique_stems(paths: list[Path]) -> list[str]:
    """Output names: each file's stem, with ``-2``, ``-3``, ... for repeats (case-insensitive,
    so the files stay distinct on case-insensitive file systems too)."""
    used: set[str] = set()
    names = []
    for path in paths:
        stem = path.stem or "image"
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
) -> PredictSummary:
    """Predict every image in ``inputs`` with the run's best checkpoint; write results in ``out``.

    Writes ``masks/<name>.png`` (first structure, 0/255, at the image's own size),
    ``overlays/<name>.png``, ``explanations/<method>/<name>.png`` for each method in
    ``explain``, ``predictions.csv`` (``image, predicted_class, p_<class>...,
    lung_area_fraction, mask_path``; ``mask_path`` relative to ``out``) and, when some failed,
    ``failures.csv`` (``image, reason``).

    Raises:
        ConfigError: an unknown explanation method or a batch size below 1.
        DataError: an input folder without images.
        CheckpointError: the run cannot be loaded.
    """
    from multimix.atomic import atomic_write_text
    from multimix.engine.evaluate import load_run
    from multimix.engine.progress import progress_bar
    from multimix.engine.runtime import select_device
    from multimix.explain.attributions import EXPLAINERS

    methods = list(dict.fromkeys(m.strip() for m in explain if m.strip()))
    unknown = [m for m in methods if m not in EXPLAINERS]
    if unknown:
        raise ConfigError(
            f"unknown explanation method {unknown[0]!r}; choose from {', '.join(EXPLAINERS)}"
        )
    if batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    paths = collect_inputs(inputs)
    names = unique_stems(paths)
    dev = select_device(device)
    cfg, model = load_run(Path(run), device=dev)
    model.eval()
    classes = list(cfg.classes)
    out = Path(out)
    try:
        for folder in ["masks", "overlays", *(f"explanations/{m}" for m in methods)]:
            (out / folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(out, f"cannot create the output folder: {exc.strerror or exc}") from None

    summary = PredictSummary()
    rows: list[list[str]] = []
    with progress_bar("predicting", total=len(paths)) as advance:
        for start in range(0, len(paths), batch_size):
            batch = []
            for path, name in zip(
                paths[start : start + batch_size], names[start : start + batch_size], strict=True
            ):
                try:
                    image = read_image(path)
                except DataError as exc:
                    summary.failures.append((str(path), _reason(exc)))
                    continue
                batch.append((path, name, image))
            if batch:
                rows += _predict_batch(model, batch, cfg.image_size, classes, methods, dev, out)
                summary.n_ok += len(batch)
            advance(min(batch_size, len(paths) - start))

    header = ["image", "predicted_class", *(f"p_{c}" for c in classes)]
    header += ["lung_area_fraction", "mask_path"]
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


def _predict_batch(
    model,
    batch: list[tuple[Path, str, np.ndarray]],
    size: int,
    classes: list[str],
    methods: list[str],
    device: torch.device,
    out: Path,
) -> list[list[str]]:
    """Run the model (and explainers) on one batch and write its files; CSV rows back."""
    from multimix.explain.attributions import explain as explain_map

    x = torch.stack([torch.from_numpy(resize_image(img, size)) for _, _, img in batch])
    x = x[:, None].to(device)
    result = model(x)
    probs = torch.softmax(result["logits"].float(), dim=1).cpu()
    mask_probs = torch.sigmoid(result["mask_logits"][:, :1].float()).cpu()
    maps = {m: explain_map(model, x, m).cpu() for m in methods}

    rows = []
    for i, (path, name, image) in enumerate(batch):
        shape = image.shape
        mask = _upsample(mask_probs[i], shape) >= _MASK_THRESHOLD
        write_png(out / "masks" / f"{name}.png", mask)
        k = int(probs[i].argmax())
        label = f"{classes[k]} {float(probs[i, k]):.2f}"
        write_png(out / "overlays" / f"{name}.png", _overlay(image, mask, label))
        for method, attr in maps.items():
            heat = _heatmap(image, np.clip(_upsample(attr[i], shape), 0.0, 1.0))
            write_png(out / "explanations" / method / f"{name}.png", heat)
        rows.append(
            [
                str(path),
                classes[k],
                *(f"{float(p):.6f}" for p in probs[i]),
                f"{float(mask.mean()):.6f}",
                f"masks/{name}.png",
            ]
        )
    return rows


def _upsample(channel_map: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """A ``(1, h, w)`` map resized bilinearly to ``shape`` as a float32 array."""
    up = F.interpolate(channel_map[None].float(), size=shape, mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


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
    font = _font(max(10, round(max(height, width) / 24)))
    pad = max(1, round(max(height, width) / 128))
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
