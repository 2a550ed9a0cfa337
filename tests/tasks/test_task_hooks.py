"""The evaluation-side hooks of the tasks: probabilities, blocks, summaries, after training."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from multimix.data.findings import NEGATIVE, POSITIVE
from multimix.models.net import ModelConfig, MultiMixNet
from multimix.tasks.base import get_task, task_of_block


def test_probabilities_and_summaries():
    logits = torch.tensor([[0.0, 2.0]])
    mc, ml = get_task("multiclass", ("a", "b")), get_task("multilabel", ("a", "b"))
    assert torch.allclose(mc.probabilities(logits).sum(1), torch.ones(1))
    assert torch.allclose(ml.probabilities(logits), torch.sigmoid(logits))
    block = {"multilabel": {"mean_auc": 0.7, "f1_macro": 0.5}}
    task, inner = task_of_block(block)
    assert task.summary(inner) == {"accuracy": None, "auc": 0.7, "f1_macro": 0.5}
    assert task.score_parts(inner) == [0.7]
    assert task_of_block({"n_images": 3}) is None


def test_after_training_writes_thresholds(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(n_classes=2, widths=(4, 8), bridge=False, task="multilabel")
    model = MultiMixNet(cfg)
    bank = SimpleNamespace(
        images=torch.randint(0, 255, (4, 1, 32, 32), dtype=torch.uint8),
        targets=torch.tensor([[POSITIVE, NEGATIVE], [NEGATIVE, POSITIVE]] * 2),
        labeled=torch.tensor([True, True, True, False]),
    )
    task = get_task("multilabel", ("a", "b"))
    task.after_training(tmp_path, model, bank, torch.arange(4), torch.device("cpu"))
    body = json.loads((tmp_path / "thresholds.json").read_text())
    assert body["n_images"] == 3 and set(body["thresholds"]) == {"a", "b"}
    get_task("multiclass", ("a", "b")).after_training(tmp_path / "x", model, bank, None, "cpu")
    assert not (tmp_path / "x").exists()
