"""The worked example of docs/extending.md, "Adding a task": a task written outside the package
(single-label classification with label smoothing and class weights from the training labels),
registered, trained, resumed exactly and evaluated, without editing any package file."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from multimix.config import TrainConfig
from multimix.core.batch import LABELED
from multimix.core.errors import ConfigError
from multimix.engine.trainer import train
from multimix.pipelines.evaluate import evaluate_run
from multimix.tasks import TASKS
from multimix.tasks.multiclass import MultiClass
from tests.resume_helpers import assert_same_weights, stop_then_resume


# --- the example (copied into docs/extending.md) -------------------------------------------
@dataclass
class SmoothedOptions:
    smoothing: float = 0.1  # label smoothing of the cross-entropy
    balance: bool = True  # weight classes by inverse frequency in the labeled training rows

    def validate(self) -> None:
        if not 0.0 <= self.smoothing < 1.0:
            raise ConfigError("--set task.smoothing must lie in [0, 1)")


@TASKS.register()
class SmoothedClasses(MultiClass):
    """One class per image, learnt with label smoothing and balanced class weights."""

    name = "smoothed-example"
    description = "single-label classes, label smoothing + class balance (the docs' example)"
    Options = SmoothedOptions
    class_weight: torch.Tensor | None = None

    def prepare(self, bank, rows, roots):
        labeled = rows[LABELED]
        if self.options.balance and len(labeled):
            counts = torch.bincount(bank.targets[labeled], minlength=len(self.classes)).float()
            self.class_weight = counts.sum() / (len(counts) * counts.clamp_min(1.0))
        return super().prepare(bank, rows, roots)

    def supervised_loss(self, logits, targets):
        weight = None if self.class_weight is None else self.class_weight.to(logits.device)
        ce = F.cross_entropy(logits, targets, weight=weight, label_smoothing=self.options.smoothing)
        acc = (logits.argmax(1) == targets).float().mean().item()
        return ce, {"loss_cls": ce.item(), "train_acc": acc}


# --- the test ------------------------------------------------------------------------------
def _cfg(out, phantom_dirs) -> TrainConfig:
    return TrainConfig(
        out=str(out), task="smoothed-example", method="encssl",
        class_data=[str(phantom_dirs["cls"])], labeled_class=12, image_size=32,
        widths=[8, 16, 16, 32, 32], batch_size=4, steps=6, val_every=2,
        task_options={"smoothing": 0.2},
    )  # fmt: skip


def test_the_multiclass_methods_serve_it():
    from multimix.methods.base import method_class
    from multimix.methods.multimix import EncSSL

    assert method_class("encssl", "smoothed-example") is EncSSL
    with pytest.raises(ConfigError, match="unknown method 'multilabel' for --task smoothed"):
        method_class("multilabel", "smoothed-example")


@pytest.mark.slow
def test_new_task_trains_resumes_exactly_and_evaluates(tmp_path, phantom_dirs):
    full = train(_cfg(tmp_path / "full", phantom_dirs))

    def balanced(trainer):
        assert trainer.task.class_weight is not None

    part = stop_then_resume(_cfg(tmp_path / "part", phantom_dirs), 3, check=balanced)
    assert_same_weights(full, part)
    metrics, _ = evaluate_run(full, [str(phantom_dirs["cls"])])
    block = metrics["sources"][phantom_dirs["cls"].name]
    assert 0.0 <= block["classification"]["auc"] <= 1.0
