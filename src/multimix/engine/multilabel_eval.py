"""Kept only until the trainer calls ``task.after_training`` (``multimix.tasks``): the
trainer's threshold choice after training. Delete with that change."""

from __future__ import annotations

from pathlib import Path

import torch

from multimix.tasks.base import get_task


def write_thresholds(run: Path, model, bank, rows: torch.Tensor, findings, device) -> dict:
    """See :meth:`multimix.tasks.multilabel.MultiLabel.choose_thresholds`."""
    task = get_task(model.cfg.task, tuple(findings))
    return task.choose_thresholds(run, model, bank, rows, device)
