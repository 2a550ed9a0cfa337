"""One label per image among two or more classes (softmax)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from multimix.data.labels import LabelSpace
from multimix.methods.losses import pseudo_label_loss
from multimix.tasks.base import TASKS, Task


@TASKS.register()
class MultiClass(Task):
    name = "multiclass"
    description = "one class per image (softmax), e.g. normal / pneumonia"
    family = "multiclass"

    # -- training side ----------------------------------------------------------------------
    def make_space(self) -> LabelSpace:
        return LabelSpace(self.classes, self.label_map)

    def supervised_loss(
        self, logits: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        ce = F.cross_entropy(logits, targets)
        acc = (logits.argmax(1) == targets).float().mean().item()
        return ce, {"loss_cls": ce.item(), "train_acc": acc}

    def pseudo_label_loss(
        self, weak: torch.Tensor, strong: torch.Tensor, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return pseudo_label_loss(weak, strong, threshold)

    # -- evaluation and prediction side -----------------------------------------------------
