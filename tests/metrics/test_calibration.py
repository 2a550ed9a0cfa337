"""Expected calibration error against a hand-computed example."""

from __future__ import annotations

import numpy as np
import pytest

from multimix.metrics.calibration import expected_calibration_error


def test_ece_hand_computed() -> None:
    # confidence (top probability), correct?  ->  bin (width 0.1)
    probs = np.array(
        [
            [0.92, 0.08],  # 0.92 right   -> bin 9: gap 0.08
            [0.86, 0.14],  # 0.86 wrong   -> bin 8: gap 0.86
            [0.28, 0.72],  # 0.72 right   -> bin 7: gap 0.28
            [0.34, 0.66],  # 0.66 right   -> bin 6: gap 0.34
            [0.45, 0.55],  # 0.55 wrong   -> bin 5: mean conf 0.565, accuracy 0.5
            [0.42, 0.58],  # 0.58 right   -> bin 5
        ]
    )
    targets = np.array([0, 1, 1, 1, 0, 1])
    out = expected_calibration_error(probs, targets, bins=10)
    expected = (0.08 + 0.86 + 0.28 + 0.34 + 2 * abs(0.5 - 0.565)) / 6
    assert out["ece"] == pytest.approx(expected, abs=1e-6)
    assert out["count"] == [0, 0, 0, 0, 0, 2, 1, 1, 1, 1]
    assert out["confidence"][:5] == [None] * 5 and out["accuracy"][:5] == [None] * 5
    assert out["confidence"][5] == pytest.approx(0.565, abs=1e-6)
    assert out["accuracy"][5:] == pytest.approx([0.5, 1.0, 1.0, 0.0, 1.0])


def test_ece_multiclass_and_extremes() -> None:
    probs = np.array([[0.72, 0.18, 0.1], [0.1, 0.25, 0.65], [0.3, 0.33, 0.37]])
    targets = np.array([0, 0, 2])  # right, wrong, right: bins 7 | 6 | 3
    out = expected_calibration_error(probs, targets, bins=10)
    assert out["ece"] == pytest.approx((0.28 + 0.65 + 0.63) / 3, abs=1e-6)
    assert sum(out["count"]) == 3
    # always right with certainty: perfectly calibrated
    certain = expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]), 5)
    assert certain["ece"] == pytest.approx(0.0) and certain["count"] == [0, 0, 0, 0, 2]
    empty = expected_calibration_error(np.zeros((0, 2)), np.zeros(0, int), bins=4)
    assert empty == {
        "ece": None,
        "confidence": [None] * 4,
        "accuracy": [None] * 4,
        "count": [0] * 4,
    }


def test_ece_bin_edge_goes_to_lower_bin() -> None:
    out = expected_calibration_error(np.array([[0.5, 0.5], [0.25, 0.75]]), np.array([0, 1]), 4)
    assert out["count"] == [0, 1, 1, 0]
