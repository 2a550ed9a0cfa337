"""Test-time adaptation to a new hospital: batch-norm statistics re-estimated on its images.

A network trained on one hospital's radiographs normalises every layer with that hospital's
feature statistics; another scanner, exposure or population shifts them, and the classifier
drifts (pediatric-trained models call adult normals pneumonia). Re-estimating the running
means and variances on the target images (AdaBN) moves the normalisation to the new domain
without labels and without touching a single learned weight.

Which layers, and how far, is an :class:`AdaptSpec`. Re-estimating the decoder's statistics
as well can cost lung Dice on a new domain, and a few target images give noisy statistics;
mixing them with the training ones (Schneider et al. 2020, "covariate shift adaptation")
keeps part of what was learned. ``benchmarks/adapt_scope.py`` measures the choices.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from multimix.core.errors import ConfigError
from multimix.models.inference import image_batches

LAYERS = ("all", "encoder")


@dataclass(frozen=True)
class AdaptSpec:
    """Which batch norms ``--adapt`` re-estimates, and the target statistics' share.

    ``layers``: ``all`` (every batch norm) or ``encoder`` (the shared encoder's only: the
    classifier and decoder keep the statistics they were trained with). ``weight``: the
    target statistics' share of the new running mean and variance, ``1 - weight`` staying
    the training ones (``AdaptSpec("all", 1.0)`` is plain AdaBN).
    """

    # Measured (benchmarks/results/adapt_scope.md, 3 seeds): of every-layer and encoder-only
    # adaptation at weights 1 and 0.5, encoder-only at 0.5 kept lung Dice on pediatric
    # phantoms best for multimix (0.786, against 0.752 for plain AdaBN) and unet (0.820 against
    # 0.786); the classifier has no batch norm of its own, so its probabilities see the same
    # adaptation either way.
    layers: str = "encoder"
    weight: float = 0.5

    def __post_init__(self) -> None:
        if self.layers not in LAYERS:
            choices = ", ".join(LAYERS)
            raise ConfigError(f"--adapt-layers must be one of {choices}, not {self.layers!r}")
        if not 0.0 < self.weight <= 1.0:
            raise ConfigError(f"--adapt-weight must lie in (0, 1], not {self.weight}")

    @classmethod
    def of(cls, adapt: bool | AdaptSpec | None) -> AdaptSpec | None:
        """``True`` means the default spec; ``False``/``None``: no adaptation."""
        if isinstance(adapt, AdaptSpec):
            return adapt
        return cls() if adapt else None


@dataclass
class Adaptation:
    """What ``--adapt`` did, for metrics.json and the predict summary."""

    images: int
    layers: int  # batch-norm layers whose statistics were re-estimated
    spec: AdaptSpec = AdaptSpec()
    labels_used: bool = False

    @classmethod
    def from_json(cls, block: dict) -> Adaptation:
        """Back from a ``metrics.json`` block, to describe it."""
        spec = AdaptSpec(block["scope"], block["weight"])
        return cls(block["images"], block["batch_norm_layers"], spec)

    def as_json(self) -> dict:
        return {
            "images": self.images,
            "batch_norm_layers": self.layers,
            "scope": self.spec.layers,
            "weight": self.spec.weight,
            "labels_used": False,
        }

    def describe(self) -> str:
        if self.images < 2:
            return "--adapt: fewer than 2 images give no batch statistics; predictions unchanged"
        if not self.layers:
            return "--adapt: the model has no batch norm to adapt; predictions unchanged"
        where = "" if self.spec.layers == "all" else f" {self.spec.layers}"
        share = "" if self.spec.weight == 1.0 else f", mixed {self.spec.weight:g} with training's"
        return (
            f"--adapt: batch-norm statistics of {self.layers}{where} layers re-estimated on "
            f"{self.images} target images{share} (no labels used)"
        )


def adapt_batch_norm(
    model: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 32,
    spec: AdaptSpec | None = None,
) -> tuple[nn.Module, Adaptation]:
    """A copy of ``model`` whose chosen batch norms carry the statistics of ``images``.

    ``images`` are uint8 (N, 1, S, S) target images and nothing else (no labels reach here).
    Statistics are the exact average over all of them (momentum None), gathered in train mode
    with gradients off, then mixed with the trained ones at ``spec.weight``; every weight and
    bias stays as trained, and so do the batch norms ``spec`` leaves out.
    """
    spec = spec or AdaptSpec()
    adapted = copy.deepcopy(model).to(device).eval()
    scope = adapted.encoder if spec.layers == "encoder" else adapted
    norms = [m for m in scope.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    trained = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over every batch
        norm.train()
    gathered = False
    if norms and len(images):
        for x in image_batches(images, batch_size, device):
            if len(x) < 2:
                continue  # a single image has no batch variance
            with torch.no_grad():
                # the encoder's norms see only the encoder's pass: no decoder, no saliency walk
                adapted.encode(x) if spec.layers == "encoder" else adapted(x)
            gathered = True
    for norm, (mean, var) in zip(norms, trained, strict=True):
        if not gathered:  # nothing to estimate from: keep what was trained
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
        elif spec.weight < 1.0:
            norm.running_mean.mul_(spec.weight).add_(mean, alpha=1.0 - spec.weight)
            norm.running_var.mul_(spec.weight).add_(var, alpha=1.0 - spec.weight)
        norm.eval()
    adapted.eval()
    return adapted, Adaptation(len(images), len(norms) if gathered else 0, spec)
