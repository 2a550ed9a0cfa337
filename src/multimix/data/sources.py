"""Read one folder of radiographs into records, whatever its layout.

Three layouts are understood, checked in this order:

* shared: ``images/``, optional ``masks/`` (lungs) and ``masks/<structure>/``, ``labels.csv``
  (``image,label``), ``meta.csv`` (``patient_id`` or ``split_group``);
* class folders: ``root/<CLASS>/*.png`` as the original pneumonia dataset ships;
* plain: image files directly in ``root`` (all unlabeled).

Everything is validated up front, so a bad file is reported before training starts, never hours in.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from multimix.data.io import is_image_file
from multimix.errors import DataError

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


def load_source(root: str | Path, name: str | None = None) -> Source:
    """Discover the layout of ``root`` and return its validated records."""
    root = Path(root)
    if not root.exists():
        raise DataError(root, "folder does not exist")
    if not root.is_dir():
        raise DataError(root, "is not a folder")
    name = name or root.resolve().name
    if (root / "images").is_dir():
        return _shared_layout(root, name)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and _images_in(d))
    if class_dirs:
        return _class_folders(root, name, class_dirs)
    images = _images_in(root)
    if not images:
        raise DataError(
            root, "no images found (expected images/, class sub-folders or image files)"
        )
    records = [Record(name, p.name, p, patient=p.stem) for p in images]
    return Source(name, root, "plain", records)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a small CSV as dicts; one clear error for encoding or header problems."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"is not UTF-8 text (byte {exc.start})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}; found {header or 'none'}")
    rows = []
    for row in reader:
        rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items() if k})
    return rows


def _shared_layout(root: Path, name: str) -> Source:
    images = {p.name: p for p in _images_in(root / "images")}
    if not images:
        raise DataError(root / "images", "no images found")
    labels = _labels(root / "labels.csv", images) if (root / "labels.csv").exists() else {}
    patients = _patients(root / "meta.csv", images) if (root / "meta.csv").exists() else {}
    masks = _masks(root / "masks", images) if (root / "masks").is_dir() else {}
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
    ]
    return Source(name, root, "shared", records)


def _labels(path: Path, images: dict[str, Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line, row in enumerate(_read_csv(path, ("image", "label")), start=2):
        image, label = row["image"], row["label"]
        if image not in images:
            raise DataError(path, f"line {line} names {image!r}, which is not in images/")
        if image in out and out[image] != label:
            raise DataError(path, f"line {line}: {image!r} is listed twice with different labels")
        if label:
            out[image] = label
    return out


def _patients(path: Path, images: dict[str, Path]) -> dict[str, str]:
    """Grouping key per image: ``split_group`` when given (near-duplicates), else ``patient_id``."""
    rows = _read_csv(path, ("image",))
    out: dict[str, str] = {}
    for row in rows:
        key = row.get("split_group") or row.get("patient_id")
        if row["image"] in images and key:
            out[row["image"]] = key
    return out


def _masks(folder: Path, images: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """``masks/*.png`` are lungs; ``masks/<structure>/*.png`` are other structures."""
    out: dict[str, dict[str, Path]] = {}
    groups = [(LUNGS, folder)] + [(d.name, d) for d in sorted(folder.iterdir()) if d.is_dir()]
    for structure, sub in groups:
        for mask in _images_in(sub):
            if mask.name not in images:
                raise DataError(mask, "mask has no image of the same name in images/")
            out.setdefault(mask.name, {})[structure] = mask
    return out


def _class_folders(root: Path, name: str, class_dirs: list[Path]) -> Source:
    records = [
        Record(name, f"{d.name}/{p.name}", p, patient=p.stem, label=d.name)
        for d in class_dirs
        for p in _images_in(d)
    ]
    return Source(name, root, "class-folders", records)
