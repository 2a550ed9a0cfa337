"""The shared encoder: one feature map per level, full resolution down to 1/2^(levels-1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from multimix.models.blocks import ConvBlock


@dataclass
class TracedLayer:
    """One conv -> norm -> ReLU of a forward pass, as ``models.saliency`` walks it back."""

    conv: nn.Conv2d
    in_shape: torch.Size
    scale: torch.Tensor | None  # per channel d(norm)/d(conv output), statistics held; None: 1
    out: torch.Tensor  # the ReLU output: no gradient passes where it is 0


@dataclass
class EncoderTrace:
    """What a traced forward keeps: the raw input, how it was normalised, every layer in order."""

    image: torch.Tensor | None = None
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None
    layers: list[TracedLayer] = field(default_factory=list)


class Encoder(nn.Module):
    """Level 0 keeps the input resolution; each later level halves it with a strided conv.

    Strided convolutions instead of max-pooling cost fewer FLOPs per level and run several
    times faster on CPU for the same width.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], norm: str) -> None:
        super().__init__()
        chans = (in_channels, *widths)
        self.levels = nn.ModuleList(
            ConvBlock(chans[i], chans[i + 1], norm, stride=1 if i == 0 else 2)
            for i in range(len(widths))
        )
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
                x, scale = _norm_with_scale(norm, conv(x))
                x = relu(x)
                trace.layers.append(TracedLayer(conv, in_shape, scale, x))
            feats.append(x)
        return feats


def _norm_with_scale(norm: nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The norm's output and its slope per channel with this batch's statistics held fixed.

    In training, ``native_batch_norm`` is what ``nn.BatchNorm2d`` runs, called directly because
    it also returns the batch's inverse standard deviation (recomputing it costs a pass).
    """
    if isinstance(norm, nn.Identity):
        return y, None
    assert isinstance(norm, nn.BatchNorm2d)
    if norm.training or norm.running_var is None:  # batch statistics, as nn.BatchNorm2d
        momentum = 0.0
        if norm.training and norm.track_running_stats:
            norm.num_batches_tracked.add_(1)
            momentum = norm.momentum
            if momentum is None:  # cumulative average
                momentum = 1.0 / float(norm.num_batches_tracked)
        out, _, invstd = torch.native_batch_norm(
            y, norm.weight, norm.bias, norm.running_mean, norm.running_var, True, momentum,
            norm.eps,
        )  # fmt: skip
    else:
        out = norm(y)
        invstd = torch.rsqrt(norm.running_var + norm.eps)
    slope = invstd if norm.weight is None else norm.weight * invstd
    return out, slope.detach().float()
