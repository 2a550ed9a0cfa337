"""The original MultiMix encoder: the U-Net's contracting path, one conv block per level."""

from __future__ import annotations

import torch
from torch import nn

from multimix.models.backbones.base import (
    DEFAULT_WIDTHS,
    Backbone,
    EncoderTrace,
    TracedLayer,
    norm_with_scale,
    register_backbone,
)
from multimix.models.blocks import ConvBlock


@register_backbone("unet")
class UNetEncoder(Backbone):
    """U-Net encoder: two 3x3 conv blocks per level, strided conv between levels (default).

    Level 0 keeps the input resolution; each later level halves it with a strided conv.
    Strided convolutions instead of max-pooling cost fewer FLOPs per level and run several
    times faster on CPU for the same width.
    """

    foldable = True  # every batch norm follows its conv inside a ConvBlock (an nn.Sequential)

    def __init__(
        self, in_channels: int = 1, widths: tuple[int, ...] = DEFAULT_WIDTHS,
        norm: str = "batch",
    ) -> None:  # fmt: skip
        super().__init__()
        chans = (in_channels, *widths)
        self.levels = nn.ModuleList(
            ConvBlock(chans[i], chans[i + 1], norm, stride=1 if i == 0 else 2)
            for i in range(len(widths))
        )
        self.channels = tuple(widths)
        self.strides = tuple(2**i for i in range(len(widths)))
        # Batch norm with its statistics held is a per-channel scale: a traced pass can be
        # walked back by hand. Instance and group norm are not, so they are never traced.
        self.traceable = all(
            isinstance(m, (nn.BatchNorm2d, nn.Identity))
            for level in self.levels
            for m in list(level)[1::3]
        )

    def forward(self, x: torch.Tensor, trace: EncoderTrace | None = None) -> list[torch.Tensor]:
        if trace is not None:
            return self._traced(x, trace)
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats

    def _traced(self, x: torch.Tensor, trace: EncoderTrace) -> list[torch.Tensor]:
        """The same computation, recording each layer (no copies: references and scales)."""
        if not self.traceable:
            raise ValueError("only an encoder with batch norm or no norm can be traced")
        feats = []
        for level in self.levels:
            modules = list(level)
            for conv, norm, relu in zip(modules[::3], modules[1::3], modules[2::3], strict=True):
                in_shape = x.shape
                x, scale = norm_with_scale(norm, conv(x))
                x = relu(x)
                trace.layers.append(TracedLayer(conv, in_shape, scale, x))
            feats.append(x)
        return feats
