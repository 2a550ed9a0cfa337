"""Explanations measured, not just drawn: the numbers behind the report's explanation table.

For a sample of a source's images and each explanation method:

- ``lung_share``: the mean share of attribution mass inside the lung mask, and
  ``lung_share_random``, the same for a uniform random map (about the lungs' share of the image):
  the reference a useful explanation has to beat;
- ``deletion_curve`` / ``deletion_auc``: the mean probability of the predicted class as the most
  attributed pixels are replaced by a blurred copy (lower is more faithful), with
  ``deletion_auc_random`` / ``deletion_curve_random`` for the random map.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from multimix.core.errors import ConfigError
from multimix.data.bank import Bank
from multimix.data.sources import LUNGS
from multimix.explain.attributions import EXPLAINERS, explain
from multimix.explain.quality import deletion_auc, deletion_curve, mass_inside

__all__ = ["check_methods", "explanation_metrics", "lung_index", "sample_rows"]

DELETION_STEPS = 10


def check_methods(methods) -> list[str]:
    """``methods`` as a list, every one a known explainer (else a ConfigError)."""
    methods = list(methods or [])
    unknown = [m for m in methods if m not in EXPLAINERS]
    if unknown:
        raise ConfigError(
            f"unknown explanation method {unknown[0]!r}; choose from {', '.join(EXPLAINERS)}"
        )
    return methods


def lung_index(structures: tuple[str, ...]) -> int | None:
    """Channel of the lung mask: ``lungs`` if named, else the first structure; None if none."""
    if not structures:
        return None
    return structures.index(LUNGS) if LUNGS in structures else 0


def sample_rows(bank: Bank, rows: torch.Tensor, samples: int, seed: int = 0) -> torch.Tensor:
    """Up to ``samples`` of ``rows`` (seeded), those with a lung mask first."""
    rows = torch.as_tensor(rows, dtype=torch.long).flatten()
    lung = lung_index(bank.structures)
    has_mask = bank.known[rows, lung] if lung is not None else torch.zeros(len(rows), dtype=bool)
    gen = torch.Generator().manual_seed(seed)
    masked, unmasked = rows[has_mask], rows[~has_mask]
    masked = masked[torch.randperm(len(masked), generator=gen)]
    unmasked = unmasked[torch.randperm(len(unmasked), generator=gen)]
    return torch.cat([masked, unmasked])[: max(0, samples)]


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def explanation_metrics(
    model: nn.Module,
    bank: Bank,
    rows: torch.Tensor,
    methods,
    device: torch.device | str,
    samples: int = 32,
    seed: int = 0,
    batch_size: int = 16,
) -> dict:
    """``{method: {n, n_masked, lung_share, lung_share_random, deletion_auc, deletion_auc_random,
    fractions, deletion_curve, deletion_curve_random}}`` on up to ``samples`` images of ``rows``.

    Maps explain each image's predicted class. Lung shares are over the sampled images that have
    a lung mask and are None when none has; curves and AUCs are over all sampled images.
    """
    methods = check_methods(methods)
    picked = sample_rows(bank, rows, samples, seed)
    if not methods or not len(picked):
        return {}
    lung = lung_index(bank.structures)
    gen = torch.Generator().manual_seed(seed + 1)
    shares: dict[str, list[float]] = {m: [] for m in [*methods, "random"]}
    curves: dict[str, list[np.ndarray]] = {m: [] for m in [*methods, "random"]}
    fractions = np.linspace(0.0, 1.0, DELETION_STEPS + 1)
    n_masked = 0
    for start in range(0, len(picked), batch_size):
        batch = picked[start : start + batch_size]
        x = bank.float_images(batch).to(device)
        maps = {m: explain(model, x, m) for m in methods}
        maps["random"] = torch.rand(x.shape, generator=gen).to(device)
        has_mask = bank.known[batch, lung] if lung is not None else torch.zeros(len(batch), bool)
        n_masked += int(has_mask.sum())
        for name, attr in maps.items():
            if has_mask.any():
                masks = bank.masks[batch[has_mask], lung].to(device)
                shares[name] += mass_inside(attr[has_mask.to(device)], masks).tolist()
            fractions, scores = deletion_curve(model, x, attr, steps=DELETION_STEPS)
            curves[name].append(scores)
    all_scores = {name: np.concatenate(parts) for name, parts in curves.items()}
    random_auc = _mean(deletion_auc(all_scores["random"]).tolist())
    random_curve = all_scores["random"].mean(axis=0).tolist()
    out = {}
    for name in methods:
        out[name] = {
            "n": len(picked),
            "n_masked": n_masked,
            "lung_share": _mean(shares[name]),
            "lung_share_random": _mean(shares["random"]),
            "deletion_auc": _mean(deletion_auc(all_scores[name]).tolist()),
            "deletion_auc_random": random_auc,
            "fractions": fractions.tolist(),
            "deletion_curve": all_scores[name].mean(axis=0).tolist(),
            "deletion_curve_random": random_curve,
        }
    return out
