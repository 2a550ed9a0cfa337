"""A small residual encoder: the same levels and widths as ``unet``, built from basic blocks.

It exists to prove that the network does not depend on one encoder: the residual sums make its
pass something the hand-walked saliency cannot follow, so it is not ``traceable`` and the
methods take the bridge's saliency from autograd instead.
"""

from __future__ import annotations

import torch
from torch import nn

from multimix.models.backbones.base import (
    DEFAULT_WIDTHS,
    Backbone,
    EncoderTrace,
    register_backbone,
)
from multimix.models.blocks import norm_layer


def _conv3x3(cin: int, cout: int, norm: str, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=norm == "none")


class StridedPointwise(nn.Conv2d):
    """A strided 1x1 convolution computed as subsampling, then a stride-1 1x1 convolution.

    The same values and parameters (so the same state-dict keys); the detour exists because
    PyTorch 2.13's CPU backward of a channels-last strided 1x1 convolution with 8 input
    channels corrupts the heap (seen on an AMD EPYC: "free(): invalid next size").
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self.stride
        x = x[:, :, :: step[0], :: step[1]]
        return nn.functional.conv2d(x, self.weight, self.bias)


class BasicBlock(nn.Module):
    """He et al. (2016): relu(body(x) + shortcut(x)), body conv3x3 -> norm -> ReLU -> conv3x3
    -> norm. A 1x1 projection (strided, normalised) matches the shortcut's shape when needed.

    Each conv and its norm sit next to each other in an ``nn.Sequential`` and nothing else
    reads the conv's output, which is what makes the block foldable.
    """

    def __init__(self, cin: int, cout: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3(cin, cout, norm, stride),
            norm_layer(norm, cout),
            nn.ReLU(inplace=True),
            _conv3x3(cout, cout, norm),
            norm_layer(norm, cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                StridedPointwise(cin, cout, 1, stride=stride, bias=norm == "none"),
                norm_layer(norm, cout),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


@register_backbone("resnet")
class ResNetEncoder(Backbone):
    """Residual encoder: a 3x3 stem, then basic blocks; the first of each later level strided.

    Level 0 keeps the input resolution (the U-Net decoder predicts masks there), so the stem is
    a stride-1 conv and there is no max-pool; each later level halves the resolution with its
    first block's strided 3x3 conv. ``blocks`` basic blocks per level (an option only this
    backbone takes: ``ModelConfig(backbone_options={"blocks": 2})``).
    """

    traceable = False  # a residual sum: the hand walk over conv -> norm -> ReLU does not apply
    foldable = True  # every batch norm follows its conv in an nn.Sequential (see BasicBlock)

    def __init__(
        self,
        in_channels: int = 1,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        norm: str = "batch",
        blocks: int = 1,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(
                f"the resnet backbone needs at least one block per level, not {blocks}"
            )
        self.stem = nn.Sequential(
            _conv3x3(in_channels, widths[0], norm),
            norm_layer(norm, widths[0]),
            nn.ReLU(inplace=True),
        )
        chans = (widths[0], *widths)
        self.levels = nn.ModuleList(
            nn.Sequential(
                BasicBlock(chans[i], chans[i + 1], norm, stride=1 if i == 0 else 2),
                *(BasicBlock(chans[i + 1], chans[i + 1], norm) for _ in range(blocks - 1)),
            )
            for i in range(len(widths))
        )
        self.channels = tuple(widths)
        self.strides = tuple(2**i for i in range(len(widths)))

    def forward(self, x: torch.Tensor, trace: EncoderTrace | None = None) -> list[torch.Tensor]:
        if trace is not None:
            raise ValueError("the resnet backbone cannot be traced: use input_saliency")
        x = self.stem(x)
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats
