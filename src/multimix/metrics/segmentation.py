"""Segmentation metrics (MONAI): Dice, IoU and 95th-percentile Hausdorff distance in pixels."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU


def _mean_finite(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else None


def per_image_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice per image and structure (N, K); images where both are empty score 1."""
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    return metric(pred.float(), target.float())


def segmentation_metrics(
    pred: torch.Tensor, target: torch.Tensor, known: torch.Tensor, structures: tuple[str, ...]
) -> dict:
    """Mean Dice/IoU/HD95 per structure over images that have that mask, and their average.

    HD95 is undefined for an empty prediction or an empty ground truth; such images are left out
    of its mean, and the value is None when no image has it defined.
    """
    out: dict = {}
    for k, name in enumerate(structures):
        rows = known[:, k]
        if not rows.any():
            continue
        p, t = pred[rows, k : k + 1].float(), target[rows, k : k + 1].float()
        dice = per_image_dice(p, t)
        iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(p, t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns on empty masks; handled as None
            hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
            hd95 = hd(p, t)
        out[name] = {
            "n": int(rows.sum()),
            "dice": float(dice.mean()),
            "iou": float(iou.mean()),
            "hd95": _mean_finite(hd95),
        }
    if not out:
        return {}
    summary = {key: _nanmean([v[key] for v in out.values()]) for key in ("dice", "iou", "hd95")}
    return {**summary, **out}


def _nanmean(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(real)) if real else None
