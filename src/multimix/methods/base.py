"""What a training method is, and the registry the CLI looks methods up in.

The engine never branches on method names. It builds a method from its own options dataclass
and the task, lets it add modules (``setup``), draws the streams and views it names
(``streams``), minimises its ``loss``, calls ``after_step`` after each optimizer step (an EMA
teacher updates there) and checkpoints its ``state_dict``. A new method is one module in this
package (discovered on first lookup) or anywhere else, registered with ``@register``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from multimix.core.batch import LABELED, MASKED, Batch, Stream
from multimix.core.errors import ConfigError
from multimix.core.registry import Registry

if TYPE_CHECKING:
    from multimix.tasks.base import Task


@dataclass
class LossWeights:
    """Loss weights and the pseudo-label threshold; defaults from the MultiMix paper."""

    cls: float = field(default=1.0, metadata={"flag": "w-cls", "help": "Classification loss."})
    seg: float = field(default=5.0, metadata={"flag": "w-seg", "help": "Segmentation loss."})
    pseudo: float = field(default=0.25, metadata={"flag": "w-pseudo", "help": "Pseudo-labels."})
    consistency: float = field(
        default=0.01, metadata={"flag": "w-consistency", "help": "Segmentation consistency."}
    )
    threshold: float = field(default=0.7, metadata={"help": "Pseudo-label confidence threshold."})

    def validate(self) -> None:
        if min(self.cls, self.seg, self.pseudo, self.consistency) < 0:
            raise ConfigError("loss weights must be >= 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError("the pseudo-label threshold must lie in [0, 1]")


def parse_options(cls: type, raw: dict[str, Any] | Any, what: str) -> Any:
    """``cls(**raw)`` with unknown keys named in one line; an instance passes through."""
    if isinstance(raw, cls):
        return raw
    raw = dict(raw or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{what} has no option {', '.join(unknown)}; it takes {', '.join(sorted(known))}"
        )
    try:
        options = cls(**raw)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    if hasattr(options, "validate"):
        options.validate()
    return options


@dataclass
class Regions:
    """The image regions a method's predictions rested on, for a reader to check.

    ``masks`` are bool (B, S, S) at the network's input size; ``values`` are, per image, the
    numbers the method read from its region (named, in a fixed order); ``name`` says what the
    region is (a file and column prefix: ``cam_region``) and ``caption`` how it was chosen.
    """

    name: str
    caption: str
    masks: torch.Tensor
    values: list[dict[str, float]]


class Method(ABC):
    """A training objective over a network, for the tasks in ``tasks``."""

    name: ClassVar[str] = "method"
    description: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ("multiclass",)  # task families (``Task.family``)
    Options: ClassVar[type] = LossWeights

    def __init__(self, options: Any = None, task: Task | None = None) -> None:
        self.options = parse_options(self.Options, options, f"method {self.name!r}")
        self.task = task
        self.modules: nn.Module | None = None

    @property
    @abstractmethod
    def streams(self) -> dict[str, Stream]:
        """Stream name -> what to draw each step, in the order the data layer draws them."""

    def streams_at(self, step: int) -> dict[str, Stream]:
        """The streams to draw at ``step`` (from 0): ``streams`` unless the method schedules
        them, e.g. an expensive unlabeled stream every few steps. Always a subset of
        ``streams`` (the trainer builds one pool per stream once)."""
        return self.streams

    @property
    def uses_bridge(self) -> bool:
        return False

    @property
    def trains_classifier(self) -> bool:
        return any(s.rows == LABELED for s in self.streams.values())

    @property
    def trains_segmentation(self) -> bool:
        return any(s.rows == MASKED for s in self.streams.values())

    def setup(self, model: nn.Module) -> nn.Module | None:
        """Extra trainable modules (a projection head, ...), or None.

        The trainer moves them to the device, trains them with the network (their own optimizer
        parameter group), wraps them with it under DDP and checkpoints them via ``state_dict``.
        Non-trained state (an EMA teacher) is kept by the method itself.
        """
        return None

    @abstractmethod
    def loss(
        self, model: nn.Module, batch: Batch, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar to minimise and the numbers worth logging; ``step`` counts from 0."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step (``step`` is the number of steps done)."""
        return None

    def regions(self, model: nn.Module, x: torch.Tensor) -> Regions | None:
        """The region each image of ``x`` was judged on and what was read from it, shown by
        ``predict`` and the report next to the explanation; None: the method has none."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (tensors and plain values)."""
        return {"modules": self.modules.state_dict()} if self.modules is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.modules is not None and "modules" in state:
            self.modules.load_state_dict(state["modules"])


METHODS: Registry[type[Method]] = Registry("method", "multimix.methods")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: register ``cls`` under ``family/name`` for each task family it serves."""
    for task in cls.tasks:
        METHODS.register(f"{task}/{cls.name}")(cls)
    return cls


def method_class(name: str, task: str = "multiclass") -> type[Method]:
    """The method ``name`` for the task registered as ``task`` (looked up by its family)."""
    from multimix.tasks import TASKS

    family = TASKS.get(task).family
    key = f"{family}/{name}"
    if key not in METHODS:
        names = sorted(k.split("/", 1)[1] for k in METHODS if k.startswith(f"{family}/"))
        raise ConfigError(
            f"unknown method {name!r} for --task {task}; choose one of {', '.join(names)}"
        )
    return METHODS.get(key)


def get_method(
    name: str, options: Any = None, task: Task | None = None, task_name: str | None = None
) -> Method:
    """The method ``name`` for ``task``; without one, for ``task_name``'s task with its default
    options and two classes (normal, pneumonia), as a quick start for notebooks and benchmarks."""
    if task is None:
        from multimix.tasks import get_task

        task = get_task(task_name or "multiclass", ("normal", "pneumonia"))
    return method_class(name, task.name)(options, task)


def available_methods(task: str | None = None) -> dict[str, str]:
    """Method name -> description (for one task, or all: then names may repeat per task)."""
    out: dict[str, str] = {}
    for key, cls in METHODS.items():
        kind, name = key.split("/", 1)
        if task is None or kind == task:
            out.setdefault(name, cls.description)
    return dict(sorted(out.items()))
