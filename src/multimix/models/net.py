"""The MultiMix network: a shared encoder, a classifier head and a bridged U-Net decoder."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from multimix.models.backbones import (
    DEFAULT_BACKBONE,
    DEFAULT_WIDTHS,
    Backbone,
    EncoderTrace,
    get_backbone,
)
from multimix.models.blocks import norm_layer
from multimix.models.decoder import Decoder
from multimix.models.saliency import input_saliency, traced_saliency

BRIDGE_CHANNELS = 16


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network from a run folder."""

    n_classes: int = 2
    n_structures: int = 1
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    norm: str = "batch"
    bridge: bool = True
    dropout: float = 0.2
    in_channels: int = 1
    task: str = "multiclass"  # the task name (multimix.tasks) the network was trained for
    localization: bool = False  # per-finding activation maps (models.heads.FindingMaps)
    # The encoder, by its name in models.backbones; metadata written before there was a choice
    # has no such key and gets the encoder of that time. ``widths``, ``norm`` and
    # ``in_channels`` are passed to every backbone; options only some take go here.
    backbone: str = DEFAULT_BACKBONE
    backbone_options: dict = field(default_factory=dict, hash=False)

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
        joined = torch.cat([image, saliency], dim=1).to(self.embed[0].weight.dtype)
        return self.embed(F.adaptive_avg_pool2d(joined, size))


class MultiMixNet(nn.Module):
    """Plain module: no losses, no data. Methods call ``encode``/``classify``/``segment``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Built first, as before there was a registry: parameters are drawn in the same order.
        self.encoder: Backbone = get_backbone(
            cfg.backbone,
            in_channels=cfg.in_channels,
            widths=tuple(cfg.widths),
            norm=cfg.norm,
            **cfg.backbone_options,
        )
        channels, strides = self.encoder.channels, self.encoder.strides
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(channels[-1], cfg.n_classes),
        )
        self.bridge = SaliencyBridge(cfg.in_channels, cfg.norm) if cfg.bridge else None
        extra = BRIDGE_CHANNELS if cfg.bridge else 0
        self.decoder = Decoder(
            channels, cfg.n_structures, cfg.norm, extra_channels=extra, strides=strides
        )
        self.localizer = None
        if cfg.localization:
            from multimix.models.heads import FindingMaps, localization_level

            level = localization_level(strides)
            self.localizer = FindingMaps(channels[level], cfg.n_classes, level=level)

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
        centered = x - x.mean(dim=(-2, -1), keepdim=True)
        pixels = x.shape[-2] * x.shape[-1]
        # The sample standard deviation as the norm of the centred image: one reduction instead
        # of torch.std_mean's two (faster on CPU), centred first, so no cancellation either.
        norm = torch.linalg.vector_norm(centered, dim=(-2, -1), keepdim=True)
        return centered / (norm / math.sqrt(max(pixels - 1, 1)) + 1e-3)

    @property
    def traceable(self) -> bool:
        """Whether ``encode`` can trace its pass for ``models.saliency.traced_saliency``: the
        backbone's to say (a residual or per-image-normalised encoder cannot be walked back)."""
        return self.encoder.traceable

    @property
    def foldable(self) -> bool:
        """Whether ``models.fusion`` may fold the backbone's batch norms into its convs."""
        return self.encoder.foldable

    def encode(self, x: torch.Tensor, trace: EncoderTrace | None = None) -> list[torch.Tensor]:
        """Feature maps per level; with ``trace``, also what a saliency walk-back needs."""
        if trace is not None:
            trace.image, trace.normalize = x.detach(), self.normalize
        # Standardised in the input's dtype (fp32: a bf16 mean over 65k pixels is too coarse),
        # then handed over in the encoder's (bf16 for a bf16 inference copy; a no-op otherwise).
        z = self.normalize(x)
        return self.encoder(z.to(self.encoder_dtype), trace)

    @property
    def encoder_dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    def classify(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(feats[-1])

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

    def forward(
        self, x: torch.Tensor, activation_maps: bool = False, segment: bool = True
    ) -> dict[str, torch.Tensor]:
        """Inference on a batch: class logits, mask logits and (with the bridge) saliency;
        also the per-class ``activation_maps`` when the model has a localization head or the
        caller asks for them (a task whose evaluation reads them). ``segment=False`` stops at
        the class logits (and maps): no decoder and no saliency walk, for images whose masks
        nobody reads (validation of a class-only source)."""
        walk = segment and self.bridge is not None  # the saliency only feeds the bridge
        if walk and self.traceable:
            feats, logits, sal = self._encode_traced(x)
        else:
            with torch.enable_grad() if walk else torch.no_grad():
                x = x.detach().requires_grad_(walk)
                feats = self.encode(x)
                logits = self.classify(feats)
                sal = input_saliency(logits, x) if walk else None
        out = {"logits": logits.detach()}
        with torch.no_grad():
            feats = [f.detach() for f in feats]
            if segment:
                out["mask_logits"] = self.segment(feats, x.detach(), sal)
            if activation_maps or self.localizer is not None:
                out["activation_maps"] = self.activation_maps(feats)
        if sal is not None:
            out["saliency"] = sal
        return out

    def _encode_traced(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Features, logits and saliency with the encoder run without autograd and walked back
        by hand (``traced_saliency``): no graph is kept, fused inference kernels may run, and
        the walk goes in the encoder's dtype (bf16 for a bf16 copy; tested against fp32)."""
        trace = EncoderTrace()
        with torch.no_grad():
            feats = self.encode(x.detach(), trace)
        with torch.enable_grad():  # also under a caller's no_grad (batch-norm adaptation)
            # a view, not the leaf itself: module hooks (torch's FLOP counter) cannot take a
            # gradient with respect to a leaf
            last = feats[-1].detach().requires_grad_(True).view_as(feats[-1])
            feats = [*feats[:-1], last]
            logits = self.classify(feats)
            sal = traced_saliency(logits, feats, trace, rows=x.shape[0], walk_dtype=last.dtype)
        return feats, logits, sal


class _LeadingRows(torch.autograd.Function):
    """``t[:n]`` whose backward pads with zeros in ``t``'s memory format.

    Plain slicing pads its gradient with a contiguous (NCHW) zero tensor; added to the
    channels-last gradients of the rest of the network, it pushes every later batch-norm and
    ReLU backward of that feature map onto a strided path several times slower.
    """

    @staticmethod
    def forward(ctx, t: torch.Tensor, n: int) -> torch.Tensor:
        ctx.shape = t.shape
        ctx.channels_last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
        return t[:n]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        fmt = torch.channels_last if ctx.channels_last else torch.contiguous_format
        full = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device, memory_format=fmt)
        n = grad.shape[0]
        full[:n].copy_(grad)
        full[n:].zero_()
        return full, None


def leading_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` images of a batch, keeping the gradient in the batch's memory format."""
    if n == t.shape[0]:
        return t
    return _LeadingRows.apply(t, n)
