"""Where a finding is: boxes from activation maps, their IoU with true boxes, zone accuracy.

Boxes from class activation maps follow Wang et al. (ChestX-ray8, 2017): the map is upsampled to
the image, scaled to [0, 1], thresholded, and each connected region above the threshold gives a
box. A true box counts as found at IoU threshold T when some predicted box overlaps it with
IoU >= T; the hit rate is reported for T = 0.1 ... 0.7.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
MAP_THRESHOLD = 0.5  # share of the map's range kept as "activated"

BoxXY = tuple[float, float, float, float]  # x0, y0, x1, y1 (exclusive ends), pixels


def box_iou(a: BoxXY, b: BoxXY) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def upsampled(fmap: torch.Tensor, size: int) -> np.ndarray:
    """(h, w) map -> (size, size) float array scaled to [0, 1] (all zero for a flat map)."""
    up = F.interpolate(fmap[None, None].float(), size=(size, size), mode="bilinear")[0, 0]
    lo, hi = float(up.min()), float(up.max())
    return ((up - lo) / (hi - lo)).numpy() if hi > lo else np.zeros((size, size), np.float32)


def map_boxes(fmap: torch.Tensor, size: int, threshold: float = MAP_THRESHOLD) -> list[BoxXY]:
    """Boxes around the connected regions of the map above ``threshold``, largest first."""
    regions, _ = ndimage.label(upsampled(fmap, size) >= threshold)
    boxes = []
    for k, found in enumerate(ndimage.find_objects(regions), start=1):
        if found is None:
            continue
        ys, xs = found
        area = int((regions[found] == k).sum())
        boxes.append((area, (float(xs.start), float(ys.start), float(xs.stop), float(ys.stop))))
    return [b for _, b in sorted(boxes, key=lambda ab: -ab[0])]


def hit_rates(ious: list[float]) -> dict[str, float | None]:
    """Share of true boxes found at each IoU threshold (keys "0.1" ... "0.7")."""
    arr = np.asarray(ious, dtype=float)
    return {f"{t:.1f}": (float((arr >= t).mean()) if len(arr) else None) for t in IOU_THRESHOLDS}
