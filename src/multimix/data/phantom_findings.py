"""Findings drawn into phantom radiographs for the multi-label task, each with exact boxes.

* ``opacity``: soft patchy consolidation-like blobs (the pneumonia opacities);
* ``nodule``: a small, round, denser spot;
* ``effusion``: fluid filling the bottom of one lung under a meniscus that rises laterally,
  blunting the costophrenic angle;
* ``cardiomegaly``: a heart 1.3x its drawn size (applied before the lungs are drawn, so the
  lungs are notched by the larger heart); its box is the heart's.

Lesions are confined to the lungs through the same soft gate as the opacities, and drawn in a
fixed order after the anatomy, so the anatomy never depends on the findings except the heart.
"""

from __future__ import annotations

import numpy as np

from multimix.data.phantom import grid, opacities, smoothstep

FINDINGS = ("cardiomegaly", "effusion", "nodule", "opacity")
FINDING_RATES = {"cardiomegaly": 0.2, "effusion": 0.2, "nodule": 0.2, "opacity": 0.3}

Box = tuple[str, int, int, int, int]  # finding, x, y, w, h (pixels)


def _bbox(finding: str, mask: np.ndarray) -> Box | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    x, y = int(cols[0]), int(rows[0])
    return (finding, x, y, int(cols[-1]) - x + 1, int(rows[-1]) - y + 1)


def _nodule(rng, att, lungs, gate) -> Box | None:
    size = lungs.shape[0]
    x, y = grid(size)
    inside = np.flatnonzero(lungs)
    row, col = divmod(int(inside[rng.integers(inside.size)]), size)
    r = rng.uniform(0.06, 0.09)
    d = np.sqrt((x - x[0, col]) ** 2 + (y - y[row, 0]) ** 2)
    att += rng.uniform(0.2, 0.28) * smoothstep((r - d) / (0.35 * r)) * gate
    return _bbox("nodule", (d < r) & lungs)


def _effusion(rng, att, lungs, gate, spine_x: float) -> Box | None:
    size = lungs.shape[0]
    x, y = grid(size)
    side = 1 if rng.random() < 0.5 else -1
    lung = lungs & ((x - spine_x) * side > 0)
    if not lung.any():
        return None
    lateral = np.broadcast_to((x - spine_x) * side, lung.shape)[lung]
    lo, hi = float(lateral.min()), float(lateral.max())
    bottom = float(np.broadcast_to(y, lung.shape)[lung].max())
    depth = rng.uniform(0.16, 0.26)
    u = np.clip(((x - spine_x) * side - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    surface = bottom - depth * (0.45 + 0.9 * u**2)  # meniscus: higher laterally
    fluid = smoothstep((y - surface) / 0.03) * gate * ((x - spine_x) * side > 0)
    att += rng.uniform(0.26, 0.32) * fluid
    return _bbox("effusion", lung & (y > surface))


def draw_findings(
    rng: np.random.Generator,
    wanted: set[str],
    att: np.ndarray,
    masks: dict[str, np.ndarray],
    gate: np.ndarray,
    spine_x: float,
) -> tuple[list[str], list[Box]]:
    """Add the ``wanted`` findings to ``att`` in place; the findings drawn and their boxes."""
    unknown = wanted - set(FINDINGS)
    if unknown:
        raise ValueError(f"unknown phantom findings {sorted(unknown)}; choose from {FINDINGS}")
    lungs = masks["lungs"]
    boxes: list[Box] = []
    if "opacity" in wanted:
        opacity, found = opacities(rng, lungs, gate)
        att += opacity
        boxes += found
    if "nodule" in wanted:
        boxes.append(_nodule(rng, att, lungs, gate))
    if "effusion" in wanted:
        boxes.append(_effusion(rng, att, lungs, gate, spine_x))
    if "cardiomegaly" in wanted:
        boxes.append(_bbox("cardiomegaly", masks["heart"]))
    boxes = [b for b in boxes if b is not None]
    return sorted({b[0] for b in boxes}), boxes
