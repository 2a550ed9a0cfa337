"""Finding boxes (``boxes.csv``) and zone labels (``zones.csv``) of a bank's rows, at bank size.

The multi-label task (:mod:`multimix.tasks.multilabel`) warps them with each view and derives
zone targets from the warped lungs, so a flipped or shifted view has targets that match it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from multimix.data.bank import Bank
from multimix.data.findings import FindingSpace
from multimix.data.io import read_image
from multimix.data.sources import LUNGS
from multimix.data.zones import box_mask, read_boxes, read_zone_labels

BankBoxes = dict[int, list[tuple[int, float, float, float, float]]]  # row -> (f, x0, y0, x1, y1)
BankZones = dict[int, list[tuple[int, int]]]  # row -> (finding index, zone number 1..6)


def _table_rows(
    bank: Bank, roots: dict[str, Path], filename: str, reader, rows: torch.Tensor | None
):
    """``(bank row, entries)`` from each source's ``filename`` table, for ``rows`` only."""
    wanted = set(range(len(bank))) if rows is None else {int(r) for r in rows}
    index = bank.index()
    for name, root in roots.items():
        path, images = Path(root) / filename, Path(root) / "images"
        if not path.exists() or not images.is_dir():
            continue
        for image, entries in reader(path, {p.name for p in images.iterdir()}).items():
            row = index.get((name, image))
            if row is not None and row in wanted:
                yield row, entries


def bank_boxes(
    bank: Bank, roots: dict[str, Path], space: FindingSpace, rows: torch.Tensor | None = None
) -> BankBoxes:
    """Boxes from each source's ``boxes.csv``, scaled to the bank's image size, per bank row.

    ``roots`` maps source names to their folders (shared layout). Boxes of findings that are not
    in ``--classes`` are skipped (a box list usually covers more findings than one task uses).
    Only ``rows`` (default: all) are looked up.
    """
    size = bank.images.shape[-1]
    out: BankBoxes = {}
    for row, boxes in _table_rows(bank, roots, "boxes.csv", read_boxes, rows):
        kept = [(space.lookup(b.finding), b) for b in boxes]
        kept = [(f, b) for f, b in kept if f is not None]
        if not kept:
            continue
        h, w = read_image(bank.records[row].image).shape  # boxes are in original pixels
        sx, sy = size / w, size / h
        out[row] = [(f, b.x * sx, b.y * sy, (b.x + b.w) * sx, (b.y + b.h) * sy) for f, b in kept]
    return out


def bank_zone_labels(
    bank: Bank, roots: dict[str, Path], space: FindingSpace, rows: torch.Tensor | None = None
) -> BankZones:
    """Zone labels from each source's ``zones.csv`` per bank row (findings not in ``--classes``
    are skipped), for sources that name zones instead of drawing boxes."""
    out: BankZones = {}
    for row, labels in _table_rows(bank, roots, "zones.csv", read_zone_labels, rows):
        kept = [(space.lookup(f), z) for f, z in labels]
        kept = [(f, z) for f, z in kept if f is not None]
        if kept:
            out[row] = kept
    return out


def bank_roots(bank: Bank) -> dict[str, Path]:
    """Folder of each source in a bank of shared-layout records (``ROOT/images/NAME``)."""
    return {r.source: r.image.parent.parent for r in bank.records}


def lung_channel(bank: Bank) -> int | None:
    return bank.structures.index(LUNGS) if LUNGS in bank.structures else None


def box_masks(boxes: BankBoxes, rows: torch.Tensor, n_findings: int, size: int) -> torch.Tensor:
    """(B, F, S, S) uint8 box masks of ``rows``."""
    return torch.stack([box_mask(boxes.get(int(r), []), n_findings, size) for r in rows])
