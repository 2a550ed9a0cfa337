"""Small convolution blocks shared by the encoder and the decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "instance", "group", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """The normalisation named by ``kind``; group norm uses groups of 8 channels."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 8), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


class ConvBlock(nn.Sequential):
    """conv3x3 (optionally strided) -> norm -> ReLU, then conv3x3 -> norm -> ReLU."""

    def __init__(self, cin: int, cout: int, norm: str, stride: int = 1) -> None:
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias),
            norm_layer(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
            norm_layer(norm, cout),
            nn.ReLU(inplace=True),
        )


class PixelLinear(nn.Conv2d):
    """1x1 convolution run as a matrix product over the channels of every pixel.

    Same parameters and outputs as ``nn.Conv2d(cin, cout, 1)``. With few output channels (the
    mask head has one per structure, the localization head one per finding) oneDNN's 1x1
    backward is slow on CPU, and the BLAS products are not (measured: benchmarks/results/
    speed.md).
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.movedim(1, -1), self.weight.flatten(1), self.bias)
        return y.movedim(-1, 1)
