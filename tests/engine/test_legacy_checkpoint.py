"""Checkpoints written before the redesign (tests/fixtures/legacy) still load and predict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from multimix.engine.checkpoint import load_weights
from tests.golden.record_legacy import FIXTURES, fixed_input

OUTPUTS = json.loads((FIXTURES / "outputs.json").read_text())


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_old_checkpoint_rebuilds_the_same_network(name):
    model = load_weights(Path(FIXTURES) / name / "checkpoints" / "best.safetensors").eval()
    out = model(fixed_input())
    assert set(out) == set(OUTPUTS[name])
    for key, total in OUTPUTS[name].items():
        got = out[key].double().sum().item()
        assert math.isclose(got, total, rel_tol=1e-4, abs_tol=1e-3), (key, got, total)
    assert torch.isfinite(out["logits"]).all()
