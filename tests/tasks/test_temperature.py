"""Temperature scaling: fitted on validation, it recovers a known temperature."""

from __future__ import annotations

import json

import torch

from multimix.metrics.calibration import fit_temperature


def test_fit_recovers_the_temperature_that_made_the_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 3, generator=g) * 3
    labels = torch.multinomial(torch.softmax(logits / 2.0, dim=1), 1, generator=g).view(-1)
    assert abs(fit_temperature(logits, labels) - 2.0) < 0.15
    assert fit_temperature(logits[:1], labels[:1]) == 1.0  # nothing to fit on


def test_a_run_keeps_its_temperature_and_evaluation_uses_it(joint_run):
    from multimix.config import TrainConfig

    info = json.loads((joint_run / "calibration.json").read_text())
    task = TrainConfig.load(joint_run).make_task()
    task.attach(joint_run)
    assert task.temperature == info["temperature"]
    logits = torch.tensor([[0.0, 2.0]])
    expected = torch.softmax(logits / info["temperature"], dim=1)
    assert torch.allclose(task.probabilities(logits), expected)
