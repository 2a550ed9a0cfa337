"""Lung zones from a lung mask, and which zones a finding's box (or zone label) falls in.

Radiologists say *where* a finding is by lung zone: each lung split into upper, middle and lower
thirds of its own height. Deriving the zones from the lung mask (rather than fixed image
thirds) keeps them anatomical whatever the patient's position or the lungs' size.

Zones are named for a frontal image in the standard display (the patient's right lung on the
image's left). Everything here is batched torch, so zone targets can be recomputed after each
augmentation: a flipped image's boxes and lungs move together, and its zones follow.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from multimix.core.errors import DataError

ZONES = (
    "right_upper",
    "right_middle",
    "right_lower",
    "left_upper",
    "left_middle",
    "left_lower",
)
N_ZONES = len(ZONES)


def split_column(lungs: torch.Tensor) -> int:
    """Column that separates the two lungs: the one with fewest lung pixels in the middle half
    of the lungs' horizontal extent (the mediastinum), nearest to their centre on ties."""
    cols = lungs.sum(dim=0)
    xs = torch.nonzero(cols).flatten()
    lo, hi = int(xs.min()), int(xs.max())
    a, b = lo + (hi - lo) // 4, hi - (hi - lo) // 4
    centre = (lo + hi) / 2
    candidates = range(a, b + 1)
    return min(candidates, key=lambda c: (int(cols[c]), abs(c - centre)))


def lung_zones(lungs: torch.Tensor) -> torch.Tensor:
    """(S, S) bool lung mask -> (S, S) long zone map: 0 outside the lungs, 1..6 as ``ZONES``.

    The image-left lung (patient's right) is everything left of :func:`split_column`; each lung's
    thirds are taken over the rows that lung spans.
    """
    lungs = lungs.bool()
    zones = torch.zeros(lungs.shape, dtype=torch.long, device=lungs.device)
    if not lungs.any():
        return zones
    split = split_column(lungs)
    cols = torch.arange(lungs.shape[1], device=lungs.device)
    rows = torch.arange(lungs.shape[0], device=lungs.device)[:, None]
    for side, half in enumerate((cols[None, :] < split, cols[None, :] >= split)):
        part = lungs & half
        if not part.any():
            continue
        ys = torch.nonzero(part.any(dim=1)).flatten()
        top, height = int(ys.min()), int(ys.max()) - int(ys.min()) + 1
        third = ((rows - top) * 3 // height).clamp(0, 2)
        zones = torch.where(part, 1 + 3 * side + third, zones)
    return zones


def lung_zones_batch(lungs: torch.Tensor) -> torch.Tensor:
    """(B, S, S) lung masks -> (B, S, S) zone maps."""
    return torch.stack([lung_zones(m) for m in lungs]) if len(lungs) else lungs.long()


def zone_onehot(zones: torch.Tensor) -> torch.Tensor:
    """(B, S, S) zone maps -> (B, 6, S, S) float, one channel per zone."""
    return F.one_hot(zones, N_ZONES + 1)[..., 1:].permute(0, 3, 1, 2).float()


def box_zones(
    box_masks: torch.Tensor, zones: torch.Tensor, min_share: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which zones hold each box: (B, F, S, S) box masks, (B, S, S) zones -> (B, F, 6) 0/1.

    A zone holds a finding when at least ``min_share`` of the box's lung pixels lie in it. The
    second result (B, F) says where that is defined: a box that touches the lungs.
    """
    onehot = zone_onehot(zones)  # (B, Z, S, S)
    inter = torch.einsum("bfhw,bzhw->bfz", box_masks.float(), onehot)
    in_lung = inter.sum(-1)
    share = inter / in_lung.clamp_min(1.0)[..., None]
    return (share >= min_share).float(), in_lung > 0


@dataclass(frozen=True)
class Box:
    finding: str  # raw finding name, as written in boxes.csv
    x: float
    y: float
    w: float
    h: float


def _csv_rows(path: Path) -> list[list[str]]:
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(path, f"is not UTF-8 text (byte {exc.start})") from None
    return list(csv.reader(io.StringIO(text)))


def read_boxes(path: Path, images: set[str]) -> dict[str, list[Box]]:
    """``boxes.csv`` (``image,label,x,y,w,h`` in pixels of the original image, or NIH's
    ``BBox_List_2017.csv`` header) -> boxes per image name. Bad rows name the file and line."""
    rows = _csv_rows(path)
    if not rows:
        return {}
    header = [h.strip().lower() for h in rows[0]]
    if header[:2] == ["image index", "finding label"]:  # NIH: the four numbers follow
        columns = [0, 1, 2, 3, 4, 5]
    else:
        needed = ["image", "label", "x", "y", "w", "h"]
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataError(path, f"missing column(s) {', '.join(missing)}; found {header}")
        columns = [header.index(c) for c in needed]
    out: dict[str, list[Box]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            image, finding, *numbers = (row[c].strip() for c in columns)
            x, y, w, h = (float(v) for v in numbers)
        except (IndexError, ValueError):
            raise DataError(path, f"line {line}: expected image,label,x,y,w,h numbers") from None
        if image not in images:
            raise DataError(path, f"line {line} names {image!r}, which is not in images/")
        if not (w > 0 and h > 0) or min(x, y) < 0:
            raise DataError(path, f"line {line}: box {x},{y},{w},{h} is empty or negative")
        out.setdefault(image, []).append(Box(finding, x, y, w, h))
    return out


def read_zone_labels(path: Path, images: set[str]) -> dict[str, list[tuple[str, int]]]:
    """``zones.csv`` (``image,label,zone``; zone one of :data:`ZONES`, e.g. ``left_lower``) ->
    ``(finding, zone number 1..6)`` per image name. Bad rows name the file and line."""
    rows = _csv_rows(path)
    if not rows:
        return {}
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in ("image", "label", "zone") if c not in header]
    if missing:
        raise DataError(path, f"missing column(s) {', '.join(missing)}; found {header}")
    columns = [header.index(c) for c in ("image", "label", "zone")]
    out: dict[str, list[tuple[str, int]]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            image, finding, zone = (row[c].strip() for c in columns)
        except IndexError:
            raise DataError(path, f"line {line}: expected image,label,zone") from None
        if image not in images:
            raise DataError(path, f"line {line} names {image!r}, which is not in images/")
        key = zone.lower().replace(" ", "_").replace("-", "_")
        if key not in ZONES:
            raise DataError(path, f"line {line}: zone {zone!r} is not one of {', '.join(ZONES)}")
        out.setdefault(image, []).append((finding, 1 + ZONES.index(key)))
    return out


def box_mask(
    boxes: list[tuple[int, float, float, float, float]], n_findings: int, size: int
) -> torch.Tensor:
    """(F, S, S) uint8 masks from ``(finding index, x0, y0, x1, y1)`` boxes in bank pixels."""
    out = torch.zeros((n_findings, size, size), dtype=torch.uint8)
    for f, x0, y0, x1, y1 in boxes:
        c0, r0 = max(int(x0), 0), max(int(y0), 0)
        c1, r1 = min(max(round(x1), c0 + 1), size), min(max(round(y1), r0 + 1), size)
        out[f, r0:r1, c0:c1] = 1
    return out


def mask_box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` (exclusive ends) of a 2-D mask, None if empty."""
    if not mask.any():
        return None
    ys = torch.nonzero(mask.any(dim=1)).flatten()
    xs = torch.nonzero(mask.any(dim=0)).flatten()
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
