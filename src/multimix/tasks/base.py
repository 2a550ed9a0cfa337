"""The task protocol and its registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from multimix.core.registry import Registry


@dataclass
class NoOptions:
    """A task without options of its own."""

    def validate(self) -> None:
        """Nothing to check."""


class Task:
    """One kind of label. Subclasses set ``name``, ``description`` and ``Options``."""

    name: ClassVar[str] = "task"
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    # The kind of targets and losses it offers methods; methods register per family, so a task
    # that subclasses MultiClass trains with every multi-class method.
    family: ClassVar[str] = ""

    def __init__(
        self,
        classes: tuple[str, ...],
        label_map: dict[str, str] | None = None,
        options: Any = None,
    ) -> None:
        self.classes = tuple(classes)
        self.label_map = dict(label_map or {})
        self.options = options if options is not None else self.Options()

    # -- training side: label space, targets, heads, maps warped with views, losses ---------
    def make_space(self) -> Any:
        """The label space that reads raw labels into bank targets (``encode``, ``stratum``)."""
        raise NotImplementedError

    @property
    def space(self) -> Any:
        return self.make_space()

    def check_data(self, class_data: list[str], seg_data: list[str]) -> None:
        """A one-line error when the run's folders cannot train this task."""

    def model_options(self) -> dict:
        """Extra :class:`~multimix.models.net.ModelConfig` fields (task name, heads)."""
        return {"task": self.name}

    def prepare(self, bank: Any, rows: dict, roots: dict) -> Any:
        """Once before training, from the training bank: statistics the loss needs, and the
        :class:`~multimix.data.streams.LabelMaps` a labeled stream warps with its views (or
        None)."""
        return None

    def supervised_loss(self, logits: Any, targets: Any) -> tuple[Any, dict[str, float]]:
        """The loss on labeled images and the numbers worth logging."""
        raise NotImplementedError

    def pseudo_label_loss(self, weak: Any, strong: Any, threshold: float) -> tuple[Any, Any]:
        """FixMatch's loss for this kind of label, and which pseudo-labels were kept."""
        raise NotImplementedError

    def localization_loss(self, model: Any, feats: list, extras: dict) -> Any:
        """A loss on the task's localization head, or None when it has none."""
        return None

    def after_training(self, run: Any, model: Any, bank: Any, val_rows: Any, device: Any) -> None:
        """A step after training on the best checkpoint (e.g. choosing thresholds)."""

    # -- evaluation and prediction side: probabilities, metrics, columns, captions, report ---


TASKS: Registry[type[Task]] = Registry("task", "multimix.tasks")


def get_task(
    name: str, classes: tuple[str, ...], label_map: dict | None = None, options: Any = None
) -> Task:
    return TASKS.get(name)(classes, label_map, options)
