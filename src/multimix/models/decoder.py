"""U-Net decoder with skip connections and an optional extra input at its first stage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimix.models.blocks import ConvBlock, PixelLinear


class UpConv(nn.ConvTranspose2d):
    """2x2, stride-2 transposed convolution with its bias added apart.

    Same parameters and outputs as ``nn.ConvTranspose2d``. On CPU, oneDNN forms a transposed
    convolution's bias gradient several times slower than summing the output gradient, and that
    sum is all autograd does for the separate add (measured: benchmarks/results/speed.md).
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose2d(x, self.weight, None, self.stride)
        return y.add_(self.bias.view(1, -1, 1, 1).to(y.dtype))


class Decoder(nn.Module):
    """Bottleneck (+ bridge channels) -> upsample and merge each skip -> one logit per structure."""

    def __init__(
        self,
        channels: tuple[int, ...],
        out_channels: int,
        norm: str,
        extra_channels: int = 0,
        strides: tuple[int, ...] | None = None,
    ) -> None:
        """``channels`` per encoder level, shallow first. Each stage upsamples by 2 and the head
        predicts at level 0's resolution, so the levels' ``strides`` (when given, as a backbone
        declares them) must be 1, 2, 4, ..."""
        super().__init__()
        if strides is not None and tuple(strides) != tuple(2**i for i in range(len(channels))):
            raise ValueError(
                f"the U-Net decoder needs encoder levels at strides 1, 2, 4, ..., not {strides}"
            )
        deep = channels[-1]
        self.first = ConvBlock(deep + extra_channels, deep, norm)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for i in range(len(channels) - 1, 0, -1):
            self.up.append(UpConv(channels[i], channels[i - 1]))
            self.merge.append(ConvBlock(2 * channels[i - 1], channels[i - 1], norm))
        self.head = PixelLinear(channels[0], out_channels)

    def forward(self, feats: list[torch.Tensor], extra: torch.Tensor | None = None) -> torch.Tensor:
        x = feats[-1] if extra is None else torch.cat([feats[-1], extra], dim=1)
        x = self.first(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(feats[:-1]), strict=True):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # odd sizes: pad back to the skip's size
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = merge(torch.cat([x, skip], dim=1))
        return self.head(x)
