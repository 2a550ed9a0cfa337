"""Scoring sources: the decoder runs only where masks are scored."""

from __future__ import annotations

import pytest
import torch

from multimix.engine.evaluate import evaluate_sources, source_metrics
from multimix.engine.inference import predict
from multimix.models.net import ModelConfig, MultiMixNet
from tests.phantom_bank import phantom_bank

S, N = 32, 6


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_class_only_source_is_scored_without_the_decoder(precision):
    torch.manual_seed(0)
    model = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16)))
    bank = phantom_bank(N, 3, size=S, seed=1)  # rows 0-2 masked, 3-5 class only
    calls = []

    def count(module, inputs, output):
        calls.append(output.shape[0])

    rows = {"seg": torch.arange(3), "cls": torch.arange(3, 6)}
    # The inference copy is made per call: count its decoder calls through the class's hook.
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: count(m, i, o) if m.__class__.__name__ == "Decoder" else None
    )
    try:
        results = evaluate_sources(
            model, bank, rows, ("normal", "pneumonia"), torch.device("cpu"), precision=precision
        )
    finally:
        handle.remove()
    assert sum(calls) == 3  # the three masked images only
    assert "segmentation" in results["seg"] and "segmentation" not in results["cls"]
    assert "classification" in results["cls"] and "classification" in results["seg"]
    cls_rows = rows["cls"]
    full = predict(model, bank.images[cls_rows], torch.device("cpu"), precision=precision)
    expected = source_metrics(bank, cls_rows, full, ("normal", "pneumonia"), ("lungs",))
    assert results["cls"]["classification"] == expected["classification"]
