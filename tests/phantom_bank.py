"""A small in-memory bank of phantoms, for tests that score predictions without a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from multimix.data.bank import Bank
from multimix.data.phantom import make_phantom
from multimix.data.sources import Record


def phantom_bank(n: int, n_masked: int, size: int = 32, seed: int = 3) -> Bank:
    """``n`` phantoms (every second one with pneumonia), all labeled; the first ``n_masked``
    carry their lung mask, the others none (known False, mask zeroed)."""
    rng = np.random.default_rng(seed)
    phantoms = [make_phantom(rng, size=size, pneumonia=i % 2 == 1) for i in range(n)]
    images = torch.from_numpy(np.stack([p.image for p in phantoms]))[:, None]
    lungs = np.stack([p.masks["lungs"] for p in phantoms]).astype(np.uint8)
    masks = torch.from_numpy(lungs)[:, None].clone()
    known = torch.zeros((n, 1), dtype=torch.bool)
    known[:n_masked] = True
    masks[n_masked:] = 0
    records = [Record("ph", f"im{i}.png", Path(f"im{i}.png"), f"p{i}") for i in range(n)]
    labeled = torch.ones(n, dtype=torch.bool)
    return Bank(images, masks, known, torch.arange(n) % 2, labeled, records, ("lungs",))
