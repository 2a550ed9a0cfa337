"""U-Net decoder with skip connections and an optional extra input at its first stage."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimix.models.blocks import ConvBlock


class Decoder(nn.Module):
    """Bottleneck (+ bridge channels) -> upsample and merge each skip -> one logit per structure."""

    def __init__(
        self, widths: tuple[int, ...], out_channels: int, norm: str, extra_channels: int = 0
    ) -> None:
        super().__init__()
        deep = widths[-1]
        self.first = ConvBlock(deep + extra_channels, deep, norm)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for i in range(len(widths) - 1, 0, -1):
            self.up.append(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, stride=2))
            self.merge.append(ConvBlock(2 * widths[i - 1], widths[i - 1], norm))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, feats: list[torch.Tensor], extra: torch.Tensor | None = None) -> torch.Tensor:
        x = feats[-1] if extra is None else torch.cat([feats[-1], extra], dim=1)
        x = self.first(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(feats[:-1]), strict=True):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:  # odd sizes: pad back to the skip's size
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = merge(torch.cat([x, skip], dim=1))
        return self.head(x)
