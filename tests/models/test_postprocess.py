"""Shape post-processing: largest components and holes, kept only where validation gains."""

from __future__ import annotations

import json

import numpy as np
import torch

from multimix.models.postprocess import (
    apply_plan,
    choose_plan,
    clean,
    component_count,
    flip_average,
    typical_components,
)


def _two_lungs(size: int = 32) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[6:26, 4:13] = True
    m[6:26, 19:28] = True
    return m


def test_clean_keeps_the_largest_components_and_fills_holes():
    lungs = _two_lungs()
    noisy = lungs.copy()
    noisy[1, 1] = noisy[30, 30] = True  # speckle outside the lungs
    noisy[15, 8] = False  # a hole inside one lung
    assert component_count(noisy) == 2  # speckle under 1% of the image does not count
    assert np.array_equal(clean(noisy, 2, True), lungs)
    assert clean(noisy, 2, False)[15, 8] == 0 and not clean(noisy, 2, False)[1, 1]
    assert np.array_equal(clean(noisy, None, False), noisy)


def test_the_typical_count_comes_from_the_training_masks():
    masks = torch.from_numpy(np.stack([_two_lungs()[None]] * 3)).float()
    assert typical_components(masks, torch.ones(3, 1, dtype=torch.bool)) == [2]


def test_the_plan_is_chosen_on_validation_and_applied_to_probabilities():
    lungs = _two_lungs()
    gt = torch.from_numpy(np.stack([lungs[None]] * 4)).float()
    probs = gt.clone() * 0.9
    probs[:, 0, 1:4, 28:31] = 0.8  # every prediction has a blob outside the lungs
    plan = choose_plan(probs, gt, torch.ones(4, 1, dtype=torch.bool), ["lungs"], [2])
    step = plan["structures"]["lungs"]
    assert step["keep_largest"] and step["val_dice"]["largest"] > step["val_dice"]["none"]
    json.dumps(plan)  # goes into the run folder as JSON
    cleaned = apply_plan(probs, plan, ["lungs"])
    assert torch.equal(cleaned >= 0.5, gt.bool())
    assert torch.equal(cleaned[gt.bool()], probs[gt.bool()])  # kept pixels keep their value

    clean_probs = gt * 0.9  # nothing to fix: the simplest option (nothing) wins the tie
    plain = choose_plan(clean_probs, gt, torch.ones(4, 1, dtype=torch.bool), ["lungs"], [2])
    assert not plain["structures"]["lungs"]["keep_largest"]
    assert not plain["structures"]["lungs"]["fill_holes"]
    assert apply_plan(probs, None, ["lungs"]) is probs


def test_flip_averaging_is_kept_only_where_it_raises_the_validation_dice():
    gt = torch.from_numpy(np.stack([_two_lungs()] * 4))[:, None].float()
    known = torch.ones(4, 1, dtype=torch.bool)
    probs = gt * 0.9
    probs[:, 0, 6:26, 4:7] = 0.4  # the left lung's edge missed on the image as given ...
    mirrored = gt * 0.9  # ... found on the mirrored one: the average (0.65) keeps it
    plan = choose_plan(probs, gt, known, ["lungs"], [2], flipped=mirrored)
    assert flip_average(plan)
    assert plan["val_dice_flip_average"]["on"] > plan["val_dice_flip_average"]["off"]
    json.dumps(plan)

    worse = torch.zeros_like(gt)  # the mirrored pass finds nothing: averaging halves it all
    assert not flip_average(choose_plan(gt * 0.9, gt, known, ["lungs"], [2], flipped=worse))
    assert not flip_average(choose_plan(probs, gt, known, ["lungs"], [2]))  # not offered
    assert not flip_average(None)  # a run from before the choice
