"""Data for the multi-label task: boxes at bank resolution, and batches with zone targets.

Zone targets are computed after augmentation: the lung mask and one box mask per finding are
warped with the image, then the zones are derived from the warped lungs. A flipped or shifted
view therefore always has targets that match what it shows.
"""

from __future__ import annotations

from pathlib import Path

import torch

from multimix.data.augment import weak
from multimix.data.bank import Bank
from multimix.data.findings import FindingSpace
from multimix.data.io import read_image
from multimix.data.sources import LUNGS
from multimix.data.streams import Streams
from multimix.data.zones import (
    box_mask,
    box_zones,
    lung_zones_batch,
    read_boxes,
    read_zone_labels,
)
from multimix.methods.base import CLS, Batch

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


class MultiLabelStreams(Streams):
    """Streams whose ``cls`` batch carries finding codes and, with boxes, zone targets."""

    def __init__(
        self,
        bank: Bank,
        pools,
        augment,
        seed: int,
        *args,
        n_findings: int,
        boxes: BankBoxes | None = None,
        min_share: float = 0.1,
        mask_rows: torch.Tensor | None = None,
        zone_labels: BankZones | None = None,
        **kwargs,
    ) -> None:
        super().__init__(bank, pools, augment, seed, *args, **kwargs)
        self.n_findings = n_findings
        self.boxes = boxes
        self.zone_labels = zone_labels or {}
        self.min_share = min_share
        self.lung = lung_channel(bank)
        # Zones come from lung masks the run may use (--labeled-seg), never from held-back ones.
        self.mask_allowed = torch.zeros(len(bank), dtype=torch.bool)
        if mask_rows is not None:
            self.mask_allowed[mask_rows] = True

    def draw(self, streams: tuple[str, ...]) -> Batch:
        batch = super().draw(tuple(s for s in streams if s != CLS))
        if CLS not in streams:
            return batch
        bank, gen = self.bank, self.generator
        rows = self.pools[CLS].next()
        images = bank.float_images(rows)
        batch.cls_codes = bank.targets[rows]
        if (self.boxes is None and not self.zone_labels) or self.lung is None:
            batch.cls_x, _ = weak(images, None, gen, self.augment)
            return batch
        size = images.shape[-1]
        lungs = bank.masks[rows, self.lung : self.lung + 1].float()
        boxes = box_masks(self.boxes or {}, rows, self.n_findings, size).float()
        self._paint_zone_labels(boxes, rows, lungs[:, 0] > 0.5)
        batch.cls_x, moved = weak(images, torch.cat([lungs, boxes], dim=1), gen, self.augment)
        zones = lung_zones_batch(moved[:, 0] > 0.5)
        zone_y, touches = box_zones(moved[:, 1:] > 0.5, zones, self.min_share)
        batch.cls_zones, batch.zone_y = zones, zone_y
        usable = bank.known[rows, self.lung] & self.mask_allowed[rows]
        batch.zone_known = touches & usable[:, None]
        return batch

    def _paint_zone_labels(self, regions: torch.Tensor, rows: torch.Tensor, lungs: torch.Tensor):
        """A zone label becomes that zone's region of the (unaugmented) lungs, drawn like a box,
        so it moves with the image and a flipped image's zone names follow, as boxes' do."""
        labelled = [i for i, r in enumerate(rows.tolist()) if r in self.zone_labels]
        if not labelled:
            return
        zones = lung_zones_batch(lungs[labelled])
        for k, i in enumerate(labelled):
            for finding, zone in self.zone_labels[int(rows[i])]:
                regions[i, finding] = torch.maximum(regions[i, finding], (zones[k] == zone).float())
