"""How unlike the training data an input is: a distance in the encoder's feature space.

After training, every encoder level's feature maps are average-pooled and concatenated (one number
per channel: 496 for the default encoder), and per training source the mean and a shrunk covariance
of those over (up to 1024) of its training images are kept, with the distances of its held-out
validation images, which are in-distribution by construction. An image's distance is its
Mahalanobis distance from the source's mean; a folder's shift score is the share of its images
farther out than 95% of that source's validation images (about 0.05 for data like the training
data, towards 1 for another hospital), and its median distance over the validation median.

Why every level and the full covariance: the per-channel spread of the bottleneck alone (a
diagonal distance) called the pediatric phantoms of a joint run 0% out of distribution. The
phantoms differ less in any one channel than in how channels move together and in low-level
texture, which the early levels hold. Measured on 12 runs in
``benchmarks/results/shift_score.md``. The covariance is shrunk towards its mean variance
(``SHRINKAGE``) because there are fewer training images than features for a small source.

The means and inverse covariances live in ``RUN/shift_reference.safetensors``; the scalars,
readable, in ``RUN/shift_reference.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

from multimix.models.inference import image_batches

SHIFT_FILE = "shift_reference.json"
MATRIX_FILE = "shift_reference.safetensors"
VERSION = 2  # 1: diagonal distance of the bottleneck only (no longer read)
WARN_SHARE = 0.5  # predict warns when over half the images lie outside the training range
MIN_VAL = 20  # fewer validation images: their 95th percentile is too rough to warn on
SHRINKAGE = 0.01  # share of the covariance replaced by its mean variance times the identity


@torch.no_grad()
def pooled_features(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32
) -> torch.Tensor:
    """Every encoder level's feature maps average-pooled and concatenated: (N, sum of
    channels) from uint8 (N, 1, S, S) images."""
    model.eval()
    out = []
    for x in image_batches(images, batch_size, device):
        levels = model.encode(x)
        out.append(torch.cat([f.float().mean(dim=(-2, -1)) for f in levels], dim=1).cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def distances(features: torch.Tensor, reference: dict) -> np.ndarray:
    """Mahalanobis distance of each row from the reference mean, per feature."""
    d = features.double() - reference["mean"].double()
    squared = torch.einsum("ij,jk,ik->i", d, reference["precision"].double(), d)
    return squared.clamp_min(0).div(d.shape[1]).sqrt().numpy()


def make_reference(train: torch.Tensor, val: torch.Tensor) -> dict:
    """Training feature mean and shrunk inverse covariance, with the validation distances'
    median and 95th percentile (the training images' own, without validation images)."""
    train = train.double()
    mean = train.mean(dim=0)
    if len(train) > 1:
        cov = torch.cov(train.T).reshape(len(mean), len(mean))
        scale = cov.diagonal().mean().clamp_min(1e-8)
    else:
        cov, scale = torch.zeros(len(mean), len(mean), dtype=torch.float64), torch.tensor(1.0)
    shrunk = (1 - SHRINKAGE) * cov + SHRINKAGE * scale * torch.eye(len(mean), dtype=cov.dtype)
    reference = {
        "mean": mean.float(),
        "precision": torch.linalg.inv(shrunk).float(),
        "n_train": len(train),
    }
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


def shift_score(features: torch.Tensor, reference: dict) -> dict:
    """The ``shift`` block of a source, against the nearest training source: share outside its
    validation 95% range, median distance over its validation median."""
    best: dict | None = None
    for name, ref in reference["sources"].items():
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
    """Scalars to ``SHIFT_FILE``, means and inverse covariances to ``MATRIX_FILE``."""
    run = Path(run)
    matrices, scalars = {}, {}
    for name, ref in reference["sources"].items():
        matrices[f"{name}/mean"] = ref["mean"].contiguous()
        matrices[f"{name}/precision"] = ref["precision"].contiguous()
        scalars[name] = {k: v for k, v in ref.items() if k not in ("mean", "precision")}
    from multimix.core.atomic import atomic_write, atomic_write_text

    data = save(matrices)
    atomic_write(run / MATRIX_FILE, lambda fh: fh.write(data))  # before the JSON that names it
    text = {"version": VERSION, "shrinkage": SHRINKAGE, "sources": scalars}
    atomic_write_text(run / SHIFT_FILE, json.dumps(text, indent=1))


def read_reference(run: Path) -> dict | None:
    """The run's reference; None when it has none, or only the older diagonal kind."""
    run = Path(run)
    path, matrix_path = run / SHIFT_FILE, run / MATRIX_FILE
    if not path.exists() or not matrix_path.exists():
        return None
    text = json.loads(path.read_text())
    if text.get("version") != VERSION:
        return None
    matrices = load_file(str(matrix_path))
    sources = {
        name: {
            **scalars,
            "mean": matrices[f"{name}/mean"],
            "precision": matrices[f"{name}/precision"],
        }
        for name, scalars in text["sources"].items()
    }
    return {"sources": sources}
