"""Test-time adaptation to a new hospital: batch-norm statistics re-estimated on its images.

A network trained on one hospital's radiographs normalises every layer with that hospital's
feature statistics; another scanner, exposure or population shifts them, and the classifier
drifts (pediatric-trained models call adult normals pneumonia). Re-estimating the running
means and variances on the target images (AdaBN) moves the normalisation to the new domain
without labels and without touching a single learned weight.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Adaptation:
    """What ``--adapt`` did, for metrics.json and the predict summary."""

    images: int
    layers: int  # batch-norm layers whose statistics were re-estimated
    labels_used: bool = False

    def as_json(self) -> dict:
        return {"images": self.images, "batch_norm_layers": self.layers, "labels_used": False}

    def describe(self) -> str:
        if not self.layers:
            return "--adapt: the model has no batch norm to adapt; predictions unchanged"
        return (
            f"--adapt: batch-norm statistics of {self.layers} layers re-estimated on "
            f"{self.images} target images (no labels used)"
        )


def adapt_batch_norm(
    model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 32
) -> tuple[nn.Module, Adaptation]:
    """A copy of ``model`` whose batch-norm running statistics are those of ``images``.

    ``images`` are uint8 (N, 1, S, S) target images and nothing else (no labels reach here).
    Statistics are the exact average over all of them (momentum None), gathered in train mode
    with gradients off; every weight and bias stays as trained.
    """
    adapted = copy.deepcopy(model).to(device).eval()
    norms = [m for m in adapted.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over every batch
        norm.train()
    if norms and len(images):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device).float().div_(255.0)
            if len(x) < 2:
                continue  # a single image has no batch variance
            with torch.no_grad():
                adapted(x.contiguous(memory_format=torch.channels_last))
    for norm in norms:
        norm.eval()
    adapted.eval()
    return adapted, Adaptation(len(images), len(norms))
