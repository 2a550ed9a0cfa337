"""The worked example of docs/extending.md, "Adding a method": a Mean Teacher written outside
the package, registered, trained and resumed exactly, without editing any package file."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from multimix.config import TrainConfig
from multimix.core.batch import LABELED, UNLABELED, Stream
from multimix.core.errors import ConfigError
from multimix.engine.trainer import train
from multimix.methods.base import Method, register
from tests.resume_helpers import assert_same_weights, stop_then_resume


# --- the example (copied into docs/extending.md) -------------------------------------------
@dataclass
class MeanTeacherOptions:
    cls: float = 1.0  # supervised loss weight
    consistency: float = 1.0  # student-teacher consistency weight
    decay: float = 0.99  # EMA decay of the teacher

    def validate(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError("--set method.decay must lie in [0, 1)")


@register
class MeanTeacher(Method):
    """Classifier + a Mean Teacher: an EMA copy of the network whose predictions on a weak view
    the student must match on a strong view (Tarvainen & Valpola, 2017)."""

    name = "mean-teacher-example"
    description = "classifier + EMA-teacher consistency (the docs' example)"
    tasks = ("multiclass",)
    Options = MeanTeacherOptions

    @property
    def streams(self) -> dict[str, Stream]:
        return {
            LABELED: Stream(LABELED, targets=True),
            UNLABELED: Stream(UNLABELED, ("weak", "strong"), size="unlabeled"),
        }

    def setup(self, model):
        self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        return None  # no extra trainable modules

    def loss(self, model, batch, step=0):
        labeled, unlabeled = batch[LABELED], batch[UNLABELED]
        logits = model.classify(model.encode(labeled["weak"].x))
        ce, logs = self.task.supervised_loss(logits, labeled.targets)
        with torch.no_grad():
            target = torch.softmax(
                self.teacher.classify(self.teacher.encode(unlabeled["weak"].x)), 1
            )
        student = torch.log_softmax(model.classify(model.encode(unlabeled["strong"].x)), 1)
        consistency = F.kl_div(student, target, reduction="batchmean")
        total = self.options.cls * ce + self.options.consistency * consistency
        return total, logs | {"loss_consistency": consistency.item(), "loss": total.item()}

    def after_step(self, model, step):
        with torch.no_grad():
            for t, s in zip(self.teacher.state_dict().values(), model.state_dict().values(),
                            strict=True):  # fmt: skip
                if t.is_floating_point():
                    t.mul_(self.options.decay).add_(s.detach(), alpha=1 - self.options.decay)
                else:
                    t.copy_(s)

    def state_dict(self):
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state):
        if "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])


# --- the test ------------------------------------------------------------------------------
def _cfg(out, phantom_dirs) -> TrainConfig:
    return TrainConfig(
        out=str(out), method="mean-teacher-example", class_data=[str(phantom_dirs["cls"])],
        labeled_class=12, image_size=32, widths=[8, 16, 16, 32, 32], batch_size=4,
        steps=6, val_every=2, method_options={"decay": 0.9},
    )  # fmt: skip


@pytest.mark.slow
def test_mean_teacher_trains_and_resumes_exactly(tmp_path, phantom_dirs):
    full = train(_cfg(tmp_path / "full", phantom_dirs))
    part = stop_then_resume(_cfg(tmp_path / "part", phantom_dirs), 3)
    saved = torch.load(part / "checkpoints" / "last.state.pt", weights_only=True)
    assert "teacher" in saved["method"]  # the teacher is checkpointed with the run
    assert_same_weights(full, part)
    log = (full / "train_log.csv").read_text()
    assert "loss_consistency" in log.splitlines()[0]
