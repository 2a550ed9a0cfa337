"""One label per image among two or more classes (softmax)."""

from __future__ import annotations

from multimix.tasks.base import TASKS, Task


@TASKS.register()
class MultiClass(Task):
    name = "multiclass"
    description = "one class per image (softmax), e.g. normal / pneumonia"

    # -- training side ----------------------------------------------------------------------

    # -- evaluation and prediction side -----------------------------------------------------
