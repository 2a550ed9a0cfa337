"""Shape post-processing of predicted masks, chosen per structure on validation (nnU-Net's habit).

The worst held-out masks are speckle outside the lungs and lungs broken into pieces. Keeping the
``k`` largest connected components of a structure (``k`` read from the training masks: two for
the lungs as one mask, one for a heart) and filling holes fixes both, but only where the data
say so: each option is kept only if it raises the validation Dice. Before them, one test-time
choice: averaging each mask with the one predicted on the left-right mirrored image (nnU-Net
mirrors by default; here it is kept only where it raises the validation Dice). Training
flips the images, so the network has seen both sides. The decisions live in
``RUN/postprocess.json``; ``evaluate``, ``predict`` and the report apply the same plan.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

POSTPROCESS_FILE = "postprocess.json"
MIN_SHARE = 0.01  # components under 1% of the image do not count as anatomy in training masks
OPTIONS = (
    {"keep_largest": False, "fill_holes": False},
    {"keep_largest": False, "fill_holes": True},
    {"keep_largest": True, "fill_holes": False},
    {"keep_largest": True, "fill_holes": True},
)


def component_count(mask: np.ndarray) -> int:
    """Connected components (8-connected) of a binary mask covering >= 1% of the image."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= MIN_SHARE * mask.size).sum())


def typical_components(masks: torch.Tensor, known: torch.Tensor) -> list[int]:
    """Per structure, the median component count of the known training masks (at least 1)."""
    out = []
    for k in range(masks.shape[1]):
        counts = [
            component_count(m[k].numpy() > 0) for m, kn in zip(masks, known, strict=True) if kn[k]
        ]
        out.append(max(1, int(np.median(counts))) if counts else 1)
    return out


def clean(mask: np.ndarray, keep: int | None, fill: bool) -> np.ndarray:
    """One binary 2-D mask with its ``keep`` largest components and/or its holes filled."""
    out = mask
    if keep is not None and out.any():
        labels, n = ndimage.label(out, structure=np.ones((3, 3)))
        if n > keep:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            kept = np.argsort(sizes)[::-1][:keep]
            out = np.isin(labels, kept)
    if fill:
        out = ndimage.binary_fill_holes(out)
    return out


def apply_plan(
    masks: torch.Tensor, plan: dict | None, structures: list[str] | tuple
) -> torch.Tensor:
    """Mask probabilities (N, K, H, W) with the plan applied: pixels it removes become 0,
    holes it fills become 1, the rest keep their probability (so 0.5 still thresholds)."""
    if not plan:
        return masks
    out = masks.clone()
    for k, name in enumerate(structures):
        step = plan.get("structures", {}).get(name)
        if not step or not (step["keep_largest"] or step["fill_holes"]):
            continue
        keep = step["components"] if step["keep_largest"] else None
        for i in range(len(out)):
            binary = out[i, k].float().numpy() >= 0.5
            cleaned = clean(binary, keep, step["fill_holes"])
            if np.array_equal(cleaned, binary):
                continue
            channel = out[i, k]
            channel[torch.from_numpy(binary & ~cleaned)] = 0
            channel[torch.from_numpy(cleaned & ~binary)] = 1
    return out


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    total = pred.sum() + gt.sum()
    return 1.0 if total == 0 else float(2 * (pred & gt).sum() / total)


def _option_scores(
    probs: torch.Tensor, masks: torch.Tensor, rows: list[int], k: int, components: int
) -> list[float]:
    """Mean Dice of structure ``k`` over ``rows`` under each of ``OPTIONS``."""
    scores = []
    for option in OPTIONS:
        keep = components if option["keep_largest"] else None
        dices = [
            _dice(clean(probs[i, k].float().numpy() >= 0.5, keep, option["fill_holes"]),
                  masks[i, k].numpy() > 0)
            for i in rows
        ]  # fmt: skip
        scores.append(float(np.mean(dices)))
    return scores


def choose_plan(
    probs: torch.Tensor,
    masks: torch.Tensor,
    known: torch.Tensor,
    structures: list[str] | tuple,
    components: list[int],
    flipped: torch.Tensor | None = None,
) -> dict:
    """Per structure, the option with the best mean validation Dice (ties: the simpler one).

    ``flipped`` (the probabilities predicted on the mirrored images, mirrored back) adds one
    run-wide choice first: average the two (``flip_average``) only if that raises the mean over
    structures of their best validation Dice; the options are then chosen on what is kept.
    """
    rows = {k: known[:, k].nonzero().view(-1).tolist() for k in range(len(structures))}
    candidates = {"off": probs} if flipped is None else {"off": probs, "on": (probs + flipped) / 2}
    scored = {
        name: {k: _option_scores(p, masks, r, k, components[k]) for k, r in rows.items() if r}
        for name, p in candidates.items()
    }
    value = {
        name: float(np.mean([max(v) for v in per.values()])) if per else 0.0
        for name, per in scored.items()
    }
    flip = flipped is not None and value["on"] > value["off"]
    plan: dict = {"structures": {}, "chosen_on": "validation", "n_images": len(probs)}
    plan["flip_average"] = flip
    if flipped is not None:
        plan["val_dice_flip_average"] = value
    for k, scores in scored["on" if flip else "off"].items():
        best = int(np.argmax(scores))  # first maximum: the simplest option among equals
        plan["structures"][structures[k]] = {
            **OPTIONS[best],
            "components": components[k],
            "val_dice": dict(zip(("none", "fill", "largest", "largest+fill"), scores, strict=True)),
        }
    return plan


def flip_average(plan: dict | None) -> bool:
    """Whether the run's masks average the image's and its mirror image's prediction."""
    return bool(plan and plan.get("flip_average"))


def write_plan(run: Path, plan: dict) -> None:
    (Path(run) / POSTPROCESS_FILE).write_text(json.dumps(plan, indent=1))


def read_plan(run: Path) -> dict | None:
    """The run's plan, or None (a run from before post-processing: masks stay as predicted)."""
    path = Path(run) / POSTPROCESS_FILE
    return json.loads(path.read_text()) if path.exists() else None
