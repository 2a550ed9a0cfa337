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

    # -- evaluation and prediction side: probabilities, metrics, columns, captions, report ---


TASKS: Registry[type[Task]] = Registry("task", "multimix.tasks")


def get_task(
    name: str, classes: tuple[str, ...], label_map: dict | None = None, options: Any = None
) -> Task:
    return TASKS.get(name)(classes, label_map, options)
