"""Tasks: what differs between kinds of labels (multi-class, multi-label, ...).

A task owns its label space and targets, its heads, the maps it warps with each view, its
losses, probabilities, metric blocks, post-training steps, prediction columns and report
blocks. The engine, predict, evaluate and report ask the task; they never test which task they
have. A new task is a new module in this package that registers itself with
``@TASKS.register()``.
"""

from multimix.tasks.base import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "get_task"]
