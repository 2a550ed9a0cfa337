"""What a training method is, and the registry the CLI looks methods up in.

The engine never branches on method names: it asks the method which streams it needs, draws
them, and calls ``loss``. A new method is a new module that registers itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from multimix.models.net import MultiMixNet

# Stream names, in the order they are concatenated for the shared encoder pass.
SEG = "seg"  # images with masks
SEG_UNLABELED = "seg_unlabeled"  # images without masks, for the consistency term
CLS = "cls"  # images with class labels
UNLABELED = "unlabeled"  # images without class labels, as weak and strong views
STREAMS = (SEG, SEG_UNLABELED, CLS, UNLABELED)


@dataclass
class Batch:
    """One step's images. ``None`` where a method does not use a stream."""

    seg_x: torch.Tensor | None = None
    seg_y: torch.Tensor | None = None
    seg_known: torch.Tensor | None = None
    seg_unlabeled_x: torch.Tensor | None = None
    cls_x: torch.Tensor | None = None
    cls_y: torch.Tensor | None = None
    weak_x: torch.Tensor | None = None
    strong_x: torch.Tensor | None = None
    # Multi-label task (methods.multilabel): finding codes of cls_x, and its zone targets.
    cls_codes: torch.Tensor | None = None  # long (B, F), data.findings codes
    cls_zones: torch.Tensor | None = None  # long (B, S, S) lung zone map
    zone_y: torch.Tensor | None = None  # float (B, F, 6)
    zone_known: torch.Tensor | None = None  # bool (B, F)

    def to(self, device: torch.device) -> Batch:
        """Move to ``device``; images go channels-last, which convolutions run faster on."""
        moved = {}
        for key, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=True)
                if value.dim() == 4:
                    value = value.contiguous(memory_format=torch.channels_last)
            moved[key] = value
        return Batch(**moved)


@dataclass(frozen=True)
class LossWeights:
    """Defaults from the MultiMix paper."""

    cls: float = 1.0
    seg: float = 5.0
    pseudo: float = 0.25
    consistency: float = 0.01
    threshold: float = 0.7


@dataclass
class Method(ABC):
    """A training objective over a :class:`MultiMixNet`."""

    weights: LossWeights = field(default_factory=LossWeights)
    name = "method"
    description = ""

    @property
    @abstractmethod
    def streams(self) -> tuple[str, ...]:
        """Streams this method draws each step."""

    @property
    def uses_bridge(self) -> bool:
        return False

    @property
    def trains_classifier(self) -> bool:
        return CLS in self.streams

    @property
    def trains_segmentation(self) -> bool:
        return SEG in self.streams

    @abstractmethod
    def loss(self, model: MultiMixNet, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar to minimise and the numbers worth logging."""


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def get_method(name: str, weights: LossWeights | None = None) -> Method:
    from multimix.core.errors import ConfigError

    _import_builtin_methods()
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name](weights=weights or LossWeights())


def available_methods() -> dict[str, str]:
    _import_builtin_methods()
    return {n: m.description for n, m in sorted(METHODS.items())}


def _import_builtin_methods() -> None:
    """Method modules register on import; imported here, lazily, to avoid import cycles."""
    from multimix.methods import multilabel, multimix  # noqa: F401
