"""Read one folder of radiographs into records, whatever its layout.

Three layouts are understood, checked in this order:

* shared: ``images/``, optional ``masks/`` (lungs) and ``masks/<structure>/``, ``labels.csv``
  (``image,label``), ``meta.csv`` (``patient_id`` or ``split_group``);
* class folders: ``root/<CLASS>/*.png`` as the original pneumonia dataset ships;
* plain: image files directly in ``root`` (all unlabeled).

Everything is validated up front, so a bad file is reported before training starts, never hours in.
"""

from __future__ import annotations

import codecs
import csv
import io
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from multimix.core.errors import DataError
from multimix.data.bad_inputs import BadInputs, handle
from multimix.data.io import image_stem, looks_like_image

LUNGS = "lungs"


@dataclass(frozen=True)
class Record:
    """One image and what is known about it; ``name`` is unique inside its source."""

    source: str
    name: str
    image: Path
    patient: str
    label: str | None = None
    masks: dict[str, Path] = field(default_factory=dict)


@dataclass
class Source:
    """All records of one folder, plus the structures it has masks for."""

    name: str
    root: Path
    layout: str
    records: list[Record]

    @property
    def structures(self) -> tuple[str, ...]:
        found = {s for r in self.records for s in r.masks}
        return tuple(sorted(found, key=lambda s: (s != LUNGS, s)))

    @property
    def has_labels(self) -> bool:
        return any(r.label is not None for r in self.records)

    def by_name(self) -> dict[str, Record]:
        return {r.name: r for r in self.records}


def load_source(root: str | Path, name: str | None = None, bad: BadInputs | None = None) -> Source:
    """Discover the layout of ``root`` and return its validated records.

    With ``bad`` under the ``skip`` policy, bad entries (an unreadable CSV row, a mask without
    an image, a file name that is not UTF-8, no images at all) are recorded there and left out
    instead of raising; an empty folder then gives a source without records.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(root, "folder does not exist")
    if not root.is_dir():
        raise DataError(root, "is not a folder")
    name = name or root.resolve().name
    if (root / "images").is_dir():
        return _shared_layout(root, name, bad)
    class_dirs = [d for d in _listing(root) if d.is_dir() and _has_images(d)]
    if class_dirs:
        return _class_folders(root, name, class_dirs, bad)
    images = _images_in(root, bad)
    if not images:
        message = "no images found (expected images/, class sub-folders or image files)"
        handle(bad, DataError(root, message))
    records = [Record(name, p.name, p, patient=p.stem) for p in images]
    return Source(name, root, "plain", records)


def _listing(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        raise DataError(folder, f"cannot list folder ({exc.strerror or exc})") from None


def _has_images(folder: Path) -> bool:
    return any(looks_like_image(p) and p.is_file() for p in _listing(folder))


def _images_in(folder: Path, bad: BadInputs | None) -> list[Path]:
    """Image files of ``folder``, sorted (DICOM without an extension included, recognised by
    content). A name that is not UTF-8 is a bad input: it cannot be written to labels.csv,
    split.json or a report."""
    found = [p for p in _listing(folder) if p.is_file() and looks_like_image(p)]
    return _utf8_named(found, "file", bad)


def _utf8_named(paths: list[Path], kind: str, bad: BadInputs | None) -> list[Path]:
    """``paths`` whose names are UTF-8; each other one is a bad input."""
    usable = []
    for path in paths:
        if _utf8(path.name):
            usable.append(path)
        else:
            handle(bad, DataError(path, f"{kind} name is not valid UTF-8; rename the {kind}"))
    return usable


def _utf8(name: str) -> bool:
    """False for a name whose bytes are not UTF-8 (Python holds them as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _key(name: str) -> str:
    """Names are matched in Unicode NFC, so a labels.csv typed on one system finds a file
    named on another (macOS writes decomposed names: 'u' + combining umlaut for 'ü')."""
    return unicodedata.normalize("NFC", name)


def _read_csv(
    path: Path, required: tuple[str, ...], bad: BadInputs | None = None
) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` pairs of a small CSV; one clear error for encoding or header
    problems. A data line that is not UTF-8 is reported by line (and left out under skip)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read file ({exc.strerror or exc})") from None
    lines = data.removeprefix(codecs.BOM_UTF8).split(b"\n")
    text_lines = []
    for number, raw in enumerate(lines, start=1):
        try:
            text_lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            error = DataError(path, f"line {number} is not UTF-8 text (byte {exc.start + 1})")
            if number == 1:
                raise error from None  # the header: nothing can be read without it
            handle(bad, error)
            text_lines.append("")  # blank: the csv reader skips it, line numbers stay right
    reader = csv.DictReader(io.StringIO("\n".join(text_lines), newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}; found {header or 'none'}")
    rows = []
    for row in reader:
        values = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k}
        if not any(values.values()):
            continue  # ",,," from a spreadsheet export: as empty as a blank line
        rows.append((reader.line_num, values))
    return rows


def _shared_layout(root: Path, name: str, bad: BadInputs | None) -> Source:
    images = {p.name: p for p in _images_in(root / "images", bad)}
    if not images:
        handle(bad, DataError(root / "images", "no images found"))
        return Source(name, root, "shared", [])
    by_key = {_key(n): n for n in images}
    labels, dropped = {}, set()
    if (root / "labels.csv").exists():
        labels, dropped = _labels(root / "labels.csv", by_key, bad)
    patients = _patients(root / "meta.csv", by_key, bad) if (root / "meta.csv").exists() else {}
    masks = _masks(root / "masks", by_key, bad) if (root / "masks").is_dir() else {}
    records = [
        Record(
            source=name,
            name=n,
            image=p,
            patient=patients.get(n, Path(n).stem),
            label=labels.get(n),
            masks=masks.get(n, {}),
        )
        for n, p in images.items()
        if n not in dropped
    ]
    return Source(name, root, "shared", records)


def _labels(
    path: Path, by_key: dict[str, str], bad: BadInputs | None
) -> tuple[dict[str, str], set[str]]:
    """Label per image name, and the images left out (under skip) for conflicting labels.

    Labels are compared case-insensitively (as they are matched); a row with an empty label
    says nothing, so it never conflicts.
    """
    out: dict[str, str] = {}
    dropped: set[str] = set()
    for line, row in _label_rows(path, bad):
        image, label = by_key.get(_key(row["image"])), row["label"]
        if image is None:
            message = f"line {line} names {row['image']!r}, which is not in images/"
            handle(bad, DataError(path, message))
            continue
        if not label or image in dropped:
            continue
        if image in out and out[image].lower() != label.lower():
            message = (
                f"line {line}: {image!r} is listed twice with different labels "
                f"({out[image]!r} and {label!r})"
            )
            handle(bad, DataError(path, message))
            dropped.add(image)
            continue
        out.setdefault(image, label)
    return {k: v for k, v in out.items() if k not in dropped}, dropped


def _label_rows(path: Path, bad: BadInputs | None) -> list[tuple[int, dict[str, str]]]:
    """``image,label`` rows; a CheXpert-style table (one 1/0/-1/blank column per finding, no
    ``label`` column) gets its ``label`` built from those columns (multimix.data.findings)."""
    from multimix.data.findings import finding_columns, wide_label

    rows = _read_csv(path, ("image",), bad)
    if rows and "label" not in rows[0][1]:
        columns = finding_columns([row for _, row in rows], {"image"})
        if not columns:
            raise DataError(path, f"missing column(s) label; found {list(rows[0][1])}")
        for _, row in rows:
            row["label"] = wide_label(row, columns) or ""
    return rows


def _patients(path: Path, by_key: dict[str, str], bad: BadInputs | None) -> dict[str, str]:
    """Grouping key per image: ``split_group`` when given (near-duplicates), else ``patient_id``."""
    out: dict[str, str] = {}
    for _, row in _read_csv(path, ("image",), bad):
        key = row.get("split_group") or row.get("patient_id")
        image = by_key.get(_key(row["image"]))
        if image is not None and key:
            out[image] = key
    return out


def _masks(
    folder: Path, by_key: dict[str, str], bad: BadInputs | None
) -> dict[str, dict[str, Path]]:
    """``masks/*.png`` are lungs; ``masks/<structure>/*.png`` are other structures.

    A mask belongs to the image of the same name without extension, so ``a.png`` is the mask
    of ``a.jpg`` (or of ``a.dcm``, or of an extensionless DICOM ``a``); an image of exactly the
    mask's name comes first. Otherwise a mask whose name fits two images (``a.jpg`` and
    ``a.dcm``) is an error: it cannot be told which it is.
    """
    stems: dict[str, list[str]] = {}
    for name in by_key.values():
        stems.setdefault(_key(image_stem(name)), []).append(name)
    out: dict[str, dict[str, Path]] = {}
    groups = [(LUNGS, folder)] + [(d.name, d) for d in _listing(folder) if d.is_dir()]
    for structure, sub in groups:
        for mask in _images_in(sub, bad):
            exact = by_key.get(_key(mask.name))
            matches = [exact] if exact else stems.get(_key(image_stem(mask.name)), [])
            if not matches:
                message = "mask has no image of the same name (without extension) in images/"
                handle(bad, DataError(mask, message))
                continue
            if len(matches) > 1:
                shown = " and ".join(sorted(matches))
                message = (
                    f"mask fits two images, {shown}: masks match images by name without "
                    "extension, so rename one of the images"
                )
                handle(bad, DataError(mask, message))
                continue
            out.setdefault(matches[0], {})[structure] = mask
    return out


def _class_folders(root: Path, name: str, class_dirs: list[Path], bad: BadInputs | None) -> Source:
    usable = _utf8_named(class_dirs, "folder", bad)
    records = [
        Record(name, f"{d.name}/{p.name}", p, patient=p.stem, label=d.name)
        for d in usable
        for p in _images_in(d, bad)
    ]
    return Source(name, root, "class-folders", records)
