"""Many findings per image, each its own sigmoid, from noisy and partly uncertain labels."""

from __future__ import annotations

from multimix.tasks.base import TASKS, Task


@TASKS.register()
class MultiLabel(Task):
    name = "multilabel"
    description = "findings per image (one sigmoid each), optional segmentation/localization"

    # -- training side ----------------------------------------------------------------------

    # -- evaluation and prediction side -----------------------------------------------------
