"""Calibration: fitted on validation, it recovers a known temperature and class bias."""

from __future__ import annotations

import json

import torch

from multimix.metrics.calibration import fit_calibration, fit_temperature


def test_fit_recovers_the_temperature_that_made_the_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 3, generator=g) * 3
    labels = torch.multinomial(torch.softmax(logits / 2.0, dim=1), 1, generator=g).view(-1)
    assert abs(fit_temperature(logits, labels) - 2.0) < 0.15
    assert fit_temperature(logits[:1], labels[:1]) == 1.0  # nothing to fit on


def test_fit_recovers_a_shifted_operating_point():
    """Logits whose labels were drawn with a bias of -1.5 on class 1: the fit finds the bias
    (and the temperature), and the argmax it implies beats the raw argmax on those labels."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4000, 2, generator=g) * 3
    shift = torch.tensor([0.0, -1.5])
    labels = torch.multinomial(torch.softmax(logits / 2.0 + shift, dim=1), 1, generator=g)
    labels = labels.view(-1)
    t, bias = fit_calibration(logits, labels)
    assert abs(t - 2.0) < 0.2 and bias[0] == 0.0 and abs(bias[1] + 1.5) < 0.2
    fitted = (logits / t + torch.tensor(bias)).argmax(1)
    assert (fitted == labels).float().mean() > (logits.argmax(1) == labels).float().mean()
    t_only, no_bias = fit_calibration(logits, labels, with_bias=False)
    assert no_bias == [0.0, 0.0] and t_only == fit_temperature(logits, labels)


def test_a_run_keeps_its_temperature_and_evaluation_uses_it(joint_run, tmp_path):
    from multimix.config import TrainConfig

    # The 24-step fixture has 8 labeled validation images: too few, so nothing was fitted.
    info = json.loads((joint_run / "calibration.json").read_text())
    assert info["temperature"] == 1.0 and info["fitted_on"] is None and "note" in info
    # A run folder whose file holds another temperature: attach reads it, probabilities use it.
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": 2.5}))
    task = TrainConfig.load(joint_run).make_task()
    task.attach(tmp_path)
    assert task.temperature == 2.5
    logits = torch.tensor([[0.0, 2.0]])
    assert torch.allclose(task.probabilities(logits), torch.softmax(logits / 2.5, dim=1))
    assert not torch.allclose(task.probabilities(logits), torch.softmax(logits, dim=1))
    # With a bias the decision moves: [0, 2] / 2.5 + [0, -1] favours class 0.
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": 2.5, "bias": [0, -1]}))
    task.attach(tmp_path)
    assert task.probabilities(logits).argmax(1).item() == 0
