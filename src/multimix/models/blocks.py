"""Small convolution blocks shared by the encoder and the decoder."""

from __future__ import annotations

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
