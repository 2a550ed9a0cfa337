"""Explanation metrics for the report: lung share, random-map reference, deletion curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multimix.core.errors import ConfigError
from multimix.data.bank import Bank
from multimix.explain.report_metrics import explanation_metrics, lung_index, sample_rows
from multimix.models.net import ModelConfig, MultiMixNet
from tests.phantom_bank import phantom_bank

S, N = 32, 6
KEYS = {
    "n",
    "n_masked",
    "lung_share",
    "lung_share_random",
    "deletion_auc",
    "deletion_auc_random",
    "fractions",
    "deletion_curve",
    "deletion_curve_random",
}


def _bank(n_masked: int) -> Bank:
    """``N`` 32x32 phantoms; the first ``n_masked`` have their lung mask."""
    return phantom_bank(N, n_masked, size=S, seed=3)


@pytest.fixture(scope="module")
def model() -> MultiMixNet:
    torch.manual_seed(0)
    return MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16))).eval()


def test_keys_ranges_and_random_reference(model: MultiMixNet) -> None:
    bank = _bank(n_masked=N)
    out = explanation_metrics(model, bank, torch.arange(N), ["saliency", "gradcam"], "cpu")
    assert set(out) == {"saliency", "gradcam"}
    lung_area = bank.masks[:, 0].float().mean().item()
    for block in out.values():
        assert set(block) == KEYS
        assert block["n"] == N and block["n_masked"] == N
        assert 0.0 <= block["lung_share"] <= 1.0
        # a uniform random map puts mass on the lungs in proportion to their area
        assert block["lung_share_random"] == pytest.approx(lung_area, abs=0.03)
        assert len(block["fractions"]) == len(block["deletion_curve"]) == 11
        assert block["fractions"][0] == 0.0 and block["fractions"][-1] == 1.0
        assert all(0.0 <= s <= 1.0 for s in block["deletion_curve"])
        assert 0.0 <= block["deletion_auc"] <= 1.0
        assert block["deletion_auc"] == pytest.approx(
            np.trapezoid(block["deletion_curve"], block["fractions"])
        )
    # the same random reference for every method; the intact image scores the same too
    assert out["saliency"]["lung_share_random"] == out["gradcam"]["lung_share_random"]
    assert out["saliency"]["deletion_curve"][0] == pytest.approx(
        out["gradcam"]["deletion_curve"][0]
    )


def test_masked_images_first_and_no_masks(model: MultiMixNet) -> None:
    bank = _bank(n_masked=2)
    rows = torch.arange(N)
    picked = sample_rows(bank, rows, samples=3, seed=0)
    assert len(picked) == 3 and set(picked[:2].tolist()) == {0, 1}
    assert torch.equal(picked, sample_rows(bank, rows, samples=3, seed=0))  # seeded
    out = explanation_metrics(model, bank, rows, ["saliency"], "cpu", samples=3)["saliency"]
    assert out["n"] == 3 and out["n_masked"] == 2 and out["lung_share"] is not None

    none = _bank(n_masked=0)
    out = explanation_metrics(model, none, rows[:4], ["saliency"], "cpu", samples=32)["saliency"]
    assert out["n"] == 4 and out["n_masked"] == 0
    assert out["lung_share"] is None and out["lung_share_random"] is None
    assert out["deletion_auc"] is not None


def test_edge_cases(model: MultiMixNet) -> None:
    bank = _bank(n_masked=N)
    assert explanation_metrics(model, bank, torch.arange(N), [], "cpu") == {}
    with pytest.raises(ConfigError, match="unknown explanation method 'lime'"):
        explanation_metrics(model, bank, torch.arange(N), ["lime"], "cpu")
    assert lung_index(()) is None and lung_index(("heart", "lungs")) == 1
    assert lung_index(("left",)) == 0
