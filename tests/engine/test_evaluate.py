"""Scoring sources: the decoder runs only where masks are scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from multimix.data.bank import Bank
from multimix.data.phantom import make_phantom
from multimix.data.sources import Record
from multimix.engine.evaluate import evaluate_sources, source_metrics
from multimix.engine.inference import predict
from multimix.models.net import ModelConfig, MultiMixNet

S, N = 32, 6


def _bank() -> Bank:
    """Rows 0-2 have their lung masks (a segmentation source), rows 3-5 none (class only)."""
    rng = np.random.default_rng(1)
    phantoms = [make_phantom(rng, size=S, pneumonia=i % 2 == 1) for i in range(N)]
    images = torch.from_numpy(np.stack([p.image for p in phantoms]))[:, None]
    masks = torch.from_numpy(np.stack([p.masks["lungs"] for p in phantoms]).astype(np.uint8))
    masks = masks[:, None].clone()
    known = torch.zeros((N, 1), dtype=torch.bool)
    known[:3] = True
    masks[3:] = 0
    records = [Record("ph", f"im{i}.png", Path(f"im{i}.png"), f"p{i}") for i in range(N)]
    labeled = torch.ones(N, dtype=torch.bool)
    return Bank(images, masks, known, torch.arange(N) % 2, labeled, records, ("lungs",))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_class_only_source_is_scored_without_the_decoder(precision):
    torch.manual_seed(0)
    model = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16)))
    bank = _bank()
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
