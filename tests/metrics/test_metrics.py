from __future__ import annotations

import numpy as np
import pytest
import torch

from multimix.metrics import classification_metrics, segmentation_metrics


def test_classification_metrics_by_hand():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 1, 1])
    m = classification_metrics(probs, y, ("normal", "pneumonia"))
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["confusion"] == [[1, 0], [1, 2]]
    assert m["auc"] == pytest.approx(1.0)
    assert m["per_class"]["pneumonia"]["recall"] == pytest.approx(2 / 3)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_one_class_source_gives_null_auc_not_a_crash():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    m = classification_metrics(probs, np.array([1, 1]), ("normal", "pneumonia"))
    assert m["auc"] is None and m["per_class"]["normal"]["recall"] is None
    assert m["per_class"]["normal"]["precision"] == 0.0
    assert m["accuracy"] == 0.5


def test_segmentation_metrics_per_structure_and_empty_prediction():
    target = torch.zeros(2, 2, 16, 16, dtype=torch.bool)
    target[:, :, 4:12, 4:12] = True
    pred = target.clone()
    pred[1, 0] = False  # image 1: empty lung prediction
    known = torch.tensor([[True, True], [True, False]])
    m = segmentation_metrics(pred, target, known, ("lungs", "heart"))
    assert m["lungs"]["n"] == 2 and m["heart"]["n"] == 1
    assert m["lungs"]["dice"] == pytest.approx(0.5)
    assert m["heart"]["dice"] == pytest.approx(1.0) and m["heart"]["hd95"] == pytest.approx(0.0)
    assert m["lungs"]["hd95"] == pytest.approx(0.0)  # the empty prediction is left out
    assert m["dice"] == pytest.approx(0.75)
