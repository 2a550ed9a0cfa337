from __future__ import annotations

import numpy as np
import pytest
import torch

from multimix.data.findings import NEGATIVE, POSITIVE, UNCERTAIN
from multimix.metrics.findings import best_f1_threshold, choose_thresholds, finding_metrics
from multimix.metrics.localization import box_iou, hit_rates, map_boxes


def test_best_f1_threshold_separates_when_it_can():
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.1])
    positive = np.array([True, True, False, False, False])
    t = best_f1_threshold(scores, positive)
    assert 0.3 < t < 0.8
    assert best_f1_threshold(scores, np.zeros(5, bool)) == 0.5


def test_metrics_score_certain_labels_only():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6], [0.1, 0.3]])
    codes = np.array(
        [[POSITIVE, NEGATIVE], [NEGATIVE, POSITIVE], [UNCERTAIN, NEGATIVE], [NEGATIVE, NEGATIVE]]
    )
    out = finding_metrics(probs, codes, ("a", "b"))
    assert out["per_finding"]["a"]["n"] == 3 and out["per_finding"]["a"]["auc"] == 1.0
    assert out["per_finding"]["b"]["auc"] == 1.0 and out["mean_auc"] == 1.0
    thresholds = choose_thresholds(probs, codes, ("a", "b"))
    out = finding_metrics(probs, codes, ("a", "b"), thresholds)
    assert out["f1_macro"] == 1.0 and out["per_finding"]["a"]["threshold"] == thresholds["a"]


def test_box_iou_and_hit_rates():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    rates = hit_rates([0.05, 0.35, 0.8])
    assert rates["0.1"] == pytest.approx(2 / 3) and rates["0.7"] == pytest.approx(1 / 3)
    assert set(rates) == {"0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"}


def test_map_boxes_find_the_activated_regions():
    fmap = torch.zeros(8, 8)
    fmap[1:3, 1:3] = 1.0
    fmap[5:8, 4:8] = 1.0
    boxes = map_boxes(fmap, 32)
    assert len(boxes) == 2
    big = boxes[0]  # largest first, close to rows 20..32, cols 16..32
    assert box_iou(big, (16, 20, 32, 32)) > 0.7
