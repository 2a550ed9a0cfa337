"""The MultiMix network: a shared encoder, a classifier head and a bridged U-Net decoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from multimix.models.blocks import norm_layer
from multimix.models.decoder import Decoder
from multimix.models.encoder import Encoder

BRIDGE_CHANNELS = 16


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network from a run folder."""

    n_classes: int = 2
    n_structures: int = 1
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    norm: str = "batch"
    bridge: bool = True
    dropout: float = 0.2
    in_channels: int = 1
    task: str = "multiclass"  # or "multilabel": one sigmoid output per finding
    localization: bool = False  # per-finding activation maps (models.heads.FindingMaps)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**{**d, "widths": tuple(d["widths"])})


class SaliencyBridge(nn.Module):
    """Image and |d score / d image| joined, pooled to the bottleneck size and embedded.

    The saliency map tells the decoder where the classifier looked, so class labels from one
    dataset can guide masks learnt from another.
    """

    def __init__(self, in_channels: int, norm: str) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Conv2d(in_channels + 1, BRIDGE_CHANNELS, 3, padding=1, bias=False),
            norm_layer(norm, BRIDGE_CHANNELS),
            nn.ReLU(inplace=True),
        )

    def forward(
        self, image: torch.Tensor, saliency: torch.Tensor, size: torch.Size
    ) -> torch.Tensor:
        joined = torch.cat([image, saliency], dim=1)
        return self.embed(F.adaptive_avg_pool2d(joined, size))


class MultiMixNet(nn.Module):
    """Plain module: no losses, no data. Methods call ``encode``/``classify``/``segment``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.in_channels, cfg.widths, cfg.norm)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.widths[-1], cfg.n_classes),
        )
        self.bridge = SaliencyBridge(cfg.in_channels, cfg.norm) if cfg.bridge else None
        extra = BRIDGE_CHANNELS if cfg.bridge else 0
        self.decoder = Decoder(cfg.widths, cfg.n_structures, cfg.norm, extra_channels=extra)
        self.localizer = None
        if cfg.localization:
            from multimix.models.heads import LOCALIZATION_LEVEL, FindingMaps

            self.localizer = FindingMaps(cfg.widths[LOCALIZATION_LEVEL], cfg.n_classes)

    def activation_maps(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Per-finding maps: the localization head's, else the classifier's CAM."""
        from multimix.models.heads import classifier_cam

        if self.localizer is not None:
            return self.localizer(feats)
        return classifier_cam(self.classifier, feats)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """Standardise each image to zero mean, unit variance.

        Sources differ in exposure and contrast far more than in anatomy (pediatric scans,
        journal figures); removing per-image brightness and contrast makes multi-source and
        cross-domain use less brittle. Kept in the model so callers pass raw [0, 1] images.
        """
        mean = x.mean(dim=(-2, -1), keepdim=True)
        std = x.std(dim=(-2, -1), keepdim=True)
        return (x - mean) / (std + 1e-3)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(self.normalize(x))

    def classify(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(feats[-1])

    def class_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over classes, or one sigmoid per finding for a multi-label network."""
        logits = logits.float()
        if self.cfg.task == "multilabel":
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)

    def segment(
        self,
        feats: list[torch.Tensor],
        image: torch.Tensor | None = None,
        saliency: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mask logits; with the bridge on, ``image`` and ``saliency`` are required."""
        extra = None
        if self.bridge is not None:
            if image is None or saliency is None:
                raise ValueError("this model has a saliency bridge: pass image and saliency")
            extra = self.bridge(image, saliency, feats[-1].shape[-2:])
        return self.decoder(feats, extra)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inference on a batch: class logits, mask logits and (with the bridge) saliency."""
        needs_grad = self.bridge is not None
        with torch.enable_grad() if needs_grad else torch.no_grad():
            x = x.detach().requires_grad_(needs_grad)
            feats = self.encode(x)
            logits = self.classify(feats)
            sal = input_saliency(logits, x) if needs_grad else None
        with torch.no_grad():
            feats = [f.detach() for f in feats]
            masks = self.segment(feats, x.detach(), sal)
        out = {"logits": logits.detach(), "mask_logits": masks}
        if self.cfg.task == "multilabel":
            with torch.no_grad():
                out["activation_maps"] = self.activation_maps(feats)
        if sal is not None:
            out["saliency"] = sal
        return out


def input_saliency(logits: torch.Tensor, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """|d(top class score)/d input| for the first ``rows`` images, each scaled to max 1.

    Computed from the forward pass already done (no second encoder pass), and only w.r.t. the
    input, so no weight gradients are formed. Summing per-image top scores gives each image's own
    gradient exactly when the network normalises per image (or in eval mode); with batch norm in
    training mode the other images' contribution through the batch statistics is O(1/batch).
    """
    rows = logits.shape[0] if rows is None else rows
    score = logits[:rows].max(dim=1).values.sum()
    (grad,) = torch.autograd.grad(score, x, retain_graph=True)
    sal = grad[:rows].abs().amax(dim=1, keepdim=True)
    peak = sal.flatten(1).amax(dim=1).clamp_min(1e-12)
    return (sal / peak[:, None, None, None]).detach()
