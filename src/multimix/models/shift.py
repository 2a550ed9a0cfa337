"""How unlike the training data an input is: a distance in the encoder's feature space.

After training, the per-channel mean and spread of the encoder's pooled bottleneck features
over the training images are kept (``RUN/shift_reference.json``) with the distances of the
held-out validation images, which are in-distribution by construction. An image's distance is
the root-mean-square standardised deviation of its features from the training mean (a diagonal
Mahalanobis distance); a folder's shift score is the share of its images farther out than 95%
of the validation images (about 0.05 for data like the training data, towards 1 for another
hospital), and its median distance over the validation median.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

SHIFT_FILE = "shift_reference.json"
WARN_SHARE = 0.5  # predict warns when over half the images lie outside the training range
MIN_VAL = 20  # fewer validation images: their 95th percentile is too rough to warn on


@torch.no_grad()
def pooled_features(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32
) -> torch.Tensor:
    """Global-average-pooled bottleneck features (N, C) of uint8 (N, 1, S, S) images."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255.0)
        feats = model.encode(x.contiguous(memory_format=torch.channels_last))[-1]
        out.append(feats.float().mean(dim=(-2, -1)).cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def distances(features: torch.Tensor, reference: dict) -> np.ndarray:
    mean = torch.tensor(reference["mean"])
    std = torch.tensor(reference["std"])
    z = (features - mean) / std
    return z.pow(2).mean(dim=1).sqrt().numpy()


def make_reference(train: torch.Tensor, val: torch.Tensor) -> dict:
    """Training feature statistics and the validation distances' median and 95th percentile."""
    std = train.std(dim=0, unbiased=True).clamp_min(1e-4) if len(train) > 1 else None
    if std is None:
        std = torch.ones(train.shape[1])
    reference = {"mean": train.mean(dim=0).tolist(), "std": std.tolist(), "n_train": len(train)}
    held = distances(val if len(val) else train, reference)
    reference |= {
        "n_val": len(val),
        "val_median": float(np.median(held)),
        "val_p95": float(np.percentile(held, 95)),
    }
    return reference


def make_references(parts: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """One reference per training source (its training and validation features).

    Sources differ (pediatric class images, adult mask images): pooled into one reference,
    the spread of one source would make the other look in-distribution. A new folder is
    measured against the training source it lies nearest to.
    """
    return {"sources": {name: make_reference(t, v) for name, (t, v) in parts.items() if len(t) > 1}}


def _per_source(reference: dict) -> dict[str, dict]:
    return reference.get("sources") or {"training": reference}  # one-reference (older) files


def shift_score(features: torch.Tensor, reference: dict) -> dict:
    """The ``shift`` block of a source, against the nearest training source: share outside its
    validation 95% range, median distance over its validation median."""
    best: dict | None = None
    for name, ref in _per_source(reference).items():
        d = distances(features, ref)
        if not len(d):
            continue
        block = {
            "outside_share": float((d > ref["val_p95"]).mean()),
            "median_distance_ratio": float(np.median(d) / ref["val_median"]),
            "nearest_source": name,
            "n_images": len(d),
            "warning": False,
        }
        block["warning"] = block["outside_share"] > WARN_SHARE and ref["n_val"] >= MIN_VAL
        if best is None or block["median_distance_ratio"] < best["median_distance_ratio"]:
            best = block
    empty = {"outside_share": None, "median_distance_ratio": None, "n_images": 0}
    return best or {**empty, "nearest_source": None, "warning": False}


def write_reference(run: Path, reference: dict) -> None:
    (Path(run) / SHIFT_FILE).write_text(json.dumps(reference))


def read_reference(run: Path) -> dict | None:
    path = Path(run) / SHIFT_FILE
    return json.loads(path.read_text()) if path.exists() else None
