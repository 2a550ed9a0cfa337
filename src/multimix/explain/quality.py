"""Numbers for explanation maps: is the attribution on the lungs, and does it matter?

- :func:`mass_inside`: the share of attribution mass inside a mask (e.g. the lungs). A map that
  puts its mass on labels, markers or the image border scores low.
- :func:`deletion_curve` / :func:`deletion_auc`: replace the most-attributed pixels first (by a
  blurred copy of the image) and follow the probability of the class. A faithful map finds the
  pixels the class depends on, so the probability falls fast and the area under the curve is
  small; lower is better.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from multimix.explain.attributions import baseline_image, class_logits, eval_mode

__all__ = ["deletion_auc", "deletion_curve", "mass_inside"]


def _as_batch_map(a: torch.Tensor, name: str) -> torch.Tensor:
    """``(B, H, W)`` or ``(B, 1, H, W)`` (channels summed) as ``(B, H, W)`` float."""
    a = torch.as_tensor(a)
    if a.dim() == 4:
        a = a.float().sum(dim=1)
    if a.dim() != 3:
        raise ValueError(f"{name} must be (B, H, W) or (B, C, H, W), got shape {tuple(a.shape)}")
    return a.float()


def mass_inside(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of each image's attribution mass inside its binary ``mask``: a tensor ``(B,)``.

    ``attr`` is ``(B, 1, H, W)`` (or ``(B, H, W)``); negative values count by their magnitude.
    ``mask`` has the same spatial shape (``(B, [1,] H, W)``, or ``(H, W)`` for all images).
    An image with no attribution mass scores 0.
    """
    a = _as_batch_map(attr, "attr").abs()
    a = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    m = torch.as_tensor(mask, device=a.device)
    if m.dim() == 2:
        m = m[None].expand_as(a)
    m = _as_batch_map(m, "mask") > 0
    if m.shape[-2:] != a.shape[-2:] or m.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"mask shape {tuple(m.shape)} does not fit attr shape {tuple(a.shape)}")
    total = a.flatten(1).sum(dim=1)
    inside = (a * m).flatten(1).sum(dim=1)
    share = torch.where(total > 0, inside / total.clamp_min(torch.finfo(a.dtype).tiny), 0.0)
    return share.clamp_(0.0, 1.0)


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    attr: torch.Tensor,
    target=None,
    steps: int = 10,
    fill: str = "blur",
) -> tuple[np.ndarray, np.ndarray]:
    """Class probability as the most-attributed pixels are replaced by ``fill``.

    Pixels are ranked by ``attr`` (highest first, ties in raster order); at fraction
    ``k / steps`` the top ``round(k / steps * H * W)`` pixels of every channel are taken from the
    fill image (``blur``: a strongly blurred copy; ``black``; ``mean``). ``target=None`` follows
    each image's predicted class on the intact image.

    Returns:
        ``fractions`` (``steps + 1``,) from 0 to 1 and ``scores`` (``B, steps + 1``): the
        probability of the target class after each deletion step (the model's task's
        probabilities: softmax; the finding's sigmoid for a multi-label model).
    """
    from multimix.tasks.base import task_for_model

    probabilities = task_for_model(model).probabilities
    if steps < 1:
        raise ValueError("deletion_curve needs at least 1 step")
    x = x.detach().float()
    a = _as_batch_map(attr, "attr").to(x.device)
    if a.shape[0] != x.shape[0] or a.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"attr shape {tuple(a.shape)} does not fit images {tuple(x.shape)}")
    batch, pixels = x.shape[0], a[0].numel()
    filler = baseline_image(x, fill)
    a = torch.nan_to_num(a.flatten(1), nan=-torch.inf)
    order = torch.argsort(a, dim=1, descending=True, stable=True)
    # rank[b, p]: position of pixel p in image b's deletion order.
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels, device=x.device).expand(batch, -1))
    fractions = np.linspace(0.0, 1.0, steps + 1)
    scores = np.empty((batch, steps + 1), dtype=np.float64)
    with eval_mode(model), torch.no_grad():
        if target is None:
            chosen = class_logits(model, x).argmax(dim=1)
        else:
            chosen = torch.as_tensor(target, dtype=torch.long, device=x.device).expand(batch)
        for k, fraction in enumerate(fractions):
            deleted = (rank < round(fraction * pixels)).view(batch, 1, *x.shape[-2:])
            probs = probabilities(class_logits(model, torch.where(deleted, filler, x)))
            scores[:, k] = probs.gather(1, chosen[:, None])[:, 0].double().cpu().numpy()
    return fractions, scores


def deletion_auc(scores: np.ndarray) -> np.ndarray:
    """Area under each deletion curve (trapezoid rule over fractions 0..1): ``(B,)``.

    Since the fractions span [0, 1] this is the curve's mean height; lower is better.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (B, steps + 1) with steps >= 1, got {scores.shape}")
    fractions = np.linspace(0.0, 1.0, scores.shape[1])
    return np.trapezoid(scores, fractions, axis=1)
