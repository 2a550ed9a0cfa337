"""The torch radiomics against PyRadiomics, and their behaviour on batches and edge cases.

Reference values come from PyRadiomics (``tests/fixtures/radiomics/reference.json``, written by
``benchmarks/radiomics_check.py``), and a second test compares live on random regions with
PyRadiomics itself (``pyradiomics-bhklab``, pinned in the ``dev`` extra). Tolerance: every
feature within a relative 1e-9 of PyRadiomics (absolute 1e-9 near zero); the check itself finds
at most 1.85e-14, i.e. the same definitions computed in float64.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from multimix.models.radiomics import FEATURES, feature_matrix, radiomic_features
from tests.models.radiomics_cases import SETTINGS, phantom_cases, real_cases

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "radiomics" / "reference.json"
RTOL = ATOL = 1e-9


def _torch_kwargs(setting: dict) -> dict:
    if "bin_width" in setting:
        return {"bin_count": None, "bin_width": setting["bin_width"]}
    return {"bin_count": setting["bin_count"]}


def _ours(cases, setting) -> list[dict[str, float]]:
    images = torch.from_numpy(np.stack([c[1] for c in cases]).astype(np.float32))
    masks = torch.from_numpy(np.stack([c[2] for c in cases]))
    feats = radiomic_features(images, masks, **_torch_kwargs(setting))
    return [{k: float(feats[k][i]) for k in FEATURES} for i in range(len(cases))]


def _compare(cases, reference: dict) -> None:
    assert cases
    for sname, setting in SETTINGS.items():
        for (name, _, _), mine in zip(cases, _ours(cases, setting), strict=True):
            theirs = reference[name][sname]
            assert set(theirs) == set(FEATURES)
            for k in FEATURES:
                assert mine[k] == pytest.approx(theirs[k], rel=RTOL, abs=ATOL), (name, sname, k)


def test_equal_to_pyradiomics_on_phantom_regions():
    reference = json.loads(REFERENCE.read_text())["cases"]["phantom"]
    _compare(phantom_cases(), reference)


def test_equal_to_pyradiomics_on_real_lungs():
    cases = real_cases()
    if not cases:
        pytest.skip("the shared covid_ieee8023 data are not here")
    _compare(cases, json.loads(REFERENCE.read_text())["cases"]["real"])


def test_equal_to_pyradiomics_live_on_random_regions():
    # No skip: PyRadiomics is pinned in the dev extra, so CI (make test) always has it.
    from tests.models.radiomics_cases import pyradiomics_features

    rng = np.random.default_rng(5)
    cases = []
    for i in range(4):
        image = rng.integers(0, 256, (40, 48)).astype(np.uint8)
        mask = rng.random((40, 48)) < 0.6  # ragged: holes, islands, saddle squares
        mask[: 2 + i] = False
        cases.append((f"random{i}", image, mask))
    reference = {
        name: {s: pyradiomics_features(im, m, setting) for s, setting in SETTINGS.items()}
        for name, im, m in cases
    }
    _compare(cases, reference)


def test_batch_equals_one_at_a_time_and_empty_masks_give_zeros():
    cases = phantom_cases()[:3]
    images = torch.from_numpy(np.stack([c[1] for c in cases]).astype(np.float32))
    masks = torch.from_numpy(np.stack([c[2] for c in cases]))
    masks[1] = False
    batch = feature_matrix(images[:, None], masks[:, None])
    assert batch.shape == (3, len(FEATURES)) and torch.isfinite(batch).all()
    assert torch.equal(batch[1], torch.zeros(len(FEATURES)))
    for i in (0, 2):
        assert torch.allclose(batch[i], feature_matrix(images[i : i + 1], masks[i : i + 1]))


def test_known_values_of_a_square():
    image = torch.zeros(1, 12, 12)
    image[0, 2:6, 2:10] = 10.0
    image[0, 6:10, 2:10] = 20.0  # top half 10, bottom half 20: one horizontal edge
    mask = image > 0
    f = radiomic_features(image, mask, bin_count=2)
    assert float(f["area"][0]) == 64 and float(f["mean"][0]) == 15
    assert float(f["variance"][0]) == 25 and float(f["entropy"][0]) == pytest.approx(1.0)
    assert float(f["perimeter"][0]) == pytest.approx(4 * 7 + 4 * 0.5**0.5)
    assert float(f["elongation"][0]) == pytest.approx(1.0) and float(f["eccentricity"][0]) < 1e-6
    # Horizontal pairs never cross the edge; 8 of 56 vertical and 7 of 49 diagonal pairs do.
    assert float(f["glcm_contrast"][0]) == pytest.approx((0 + 8 / 56 + 2 * 7 / 49) / 4)
