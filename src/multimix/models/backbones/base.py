"""What the network asks of an encoder, and the registry that names the encoders it can use.

``MultiMixNet`` builds everything after the encoder (classifier, saliency bridge, U-Net decoder,
localization head) from what the backbone declares: channels and strides per level. Whether the
fast hand-walked saliency (``models.saliency.traced_saliency``) or batch-norm folding
(``models.fusion``) may be used is the backbone's to say, not something assumed of one encoder.

A backbone is one class that registers itself with :func:`register_backbone`. The modules of
this package are found and imported on the first lookup, so a built-in backbone is one new file
here; a backbone defined anywhere else is registered as soon as its module is imported.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from multimix.core.registry import Registry

# Channels per encoder level, the default of every backbone and of ``multimix train``. Three
# quarters of each (12..192) takes 10-18% more steps in the same CPU minutes but was not ahead
# on the held-out hospital's lungs over ten paired seeds on two days
# (benchmarks/results/label_efficiency_joint_schedule.md, sections 35 and 38).
DEFAULT_WIDTHS: tuple[int, ...] = (16, 32, 64, 128, 256)


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


class Backbone(nn.Module, ABC):
    """An encoder: ``forward(x, trace=None)`` gives one feature map per level, shallow first.

    Level ``i`` has ``channels[i]`` channels at ``1/strides[i]`` of the input resolution. The
    U-Net decoder needs ``strides == (1, 2, 4, ...)``: it upsamples by 2 per level and predicts
    masks at the resolution of level 0.

    ``traceable``: the pass is a plain chain of conv -> batch norm (or none) -> ReLU, so with a
    ``trace`` it records every such layer in order and ``traced_saliency`` can walk it back by
    hand. Anything else (a residual sum, a per-image norm) makes the walk wrong, so the methods
    fall back to autograd (``input_saliency``). A backbone that is not traceable raises
    ``ValueError`` when given a trace.

    ``foldable``: every batch norm directly follows the conv it normalises inside an
    ``nn.Sequential`` and that conv's output goes nowhere else, so :meth:`fold_batch_norm` may
    merge the pair for inference without changing any output.
    """

    name: ClassVar[str] = ""  # set by register_backbone
    description: ClassVar[str] = ""
    channels: tuple[int, ...]  # set in __init__: they depend on the options
    strides: tuple[int, ...]
    traceable: bool = False
    foldable: bool = False

    @abstractmethod
    def forward(self, x: torch.Tensor, trace: EncoderTrace | None = None) -> list[torch.Tensor]:
        """Feature maps per level; ``x`` is already normalised by the network."""

    def fold_batch_norm(self) -> None:
        """Merge every conv -> batch norm pair into one conv, in place (eval mode only).

        Only called when ``foldable``; a backbone laid out otherwise overrides this.
        """
        fold_sequentials(self)


def fold_sequentials(module: nn.Module) -> None:
    """Every conv directly followed by batch norm in an ``nn.Sequential`` becomes one conv.

    In eval mode batch norm is a per-channel scale and shift, so it folds into the weights and
    bias of the conv before it; the norm is replaced by ``nn.Identity`` to keep indices (and so
    a traced walk over conv, norm, ReLU triples) as they were.
    """
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, norm)
                seq[i + 1] = nn.Identity()


def norm_with_scale(norm: nn.Module, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
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


# -- the registry ------------------------------------------------------------------------------
BACKBONES: Registry[type[Backbone]] = Registry("backbone", "multimix.models.backbones")
B = TypeVar("B", bound=type[Backbone])


def register_backbone(name: str, description: str = "") -> Callable[[B], B]:
    """Class decorator: make a :class:`Backbone` available as ``ModelConfig(backbone=name)``.

    Its constructor is called as ``cls(in_channels=..., widths=..., norm=..., **options)`` by
    ``MultiMixNet``, so it takes those keywords (or ``**kwargs``). The description defaults to
    the first line of the class docstring. Registering another class under a taken name is an
    error; re-registering the same class (a module reloaded) replaces it.
    """

    def decorate(cls: B) -> B:
        if not (isinstance(cls, type) and issubclass(cls, Backbone)):
            raise TypeError(f"backbone {name!r} must subclass multimix.models.backbones.Backbone")
        BACKBONES.register(name)(cls)
        cls.name = name
        doc = (cls.__doc__ or "").strip().splitlines()
        cls.description = description or (doc[0] if doc else name)
        return cls

    return decorate


def available_backbones() -> dict[str, str]:
    """Registered name -> one-line description, sorted by name."""
    return {name: cls.description for name, cls in BACKBONES.items()}


def backbone_class(name: str) -> type[Backbone]:
    """The class registered as ``name``; an unknown name is a one-line ``ConfigError``."""
    return BACKBONES.get(name)


def get_backbone(name: str, **options: object) -> Backbone:
    """A new backbone ``name`` built with ``options`` (``in_channels``, ``widths``, ``norm``...).

    What it declares is checked here, once, so a mistake in a new backbone is named at build
    time instead of surfacing as a shape error deep in the decoder.
    """
    backbone = backbone_class(name)(**options)
    channels = tuple(getattr(backbone, "channels", ()))
    strides = tuple(getattr(backbone, "strides", ()))
    if not channels or len(channels) != len(strides):
        raise ValueError(f"backbone {name!r} must declare channels and strides for every level")
    backbone.channels, backbone.strides = channels, strides
    return backbone
