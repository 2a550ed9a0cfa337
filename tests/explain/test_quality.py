"""Explanation quality: mass inside a mask, and the deletion curve on a model we understand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from multimix.explain.quality import deletion_auc, deletion_curve, mass_inside


class SpotDetector(nn.Module):
    """Toy classifier: class 1 when the 8x8 patch at rows/cols 4..11 holds a sharp bright spot.

    It has the ``encode``/``classify`` interface of MultiMixNet and its ``cfg.task``, and the
    pixels that matter are known exactly: the small bright blob the test puts in the patch.
    Blurring the blob (the deletion fill) flattens its peak, so deleting the blob removes the
    class.
    """

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]

    def classify(self, feats: list[torch.Tensor]) -> torch.Tensor:
        peak = feats[-1][:, 0, 4:12, 4:12].amax(dim=(-2, -1))
        score = 20.0 * (peak - 0.5)
        return torch.stack([torch.zeros_like(score), score], dim=1)

    cfg = SimpleNamespace(task="multiclass", n_classes=2)


def blob_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Two dark 32x32 images, each with a 4x4 blob of 1 inside the patch; the blob masks."""
    x = torch.zeros(2, 1, 32, 32)
    x[0, 0, 6:10, 6:10] = 1.0
    x[1, 0, 5:9, 7:11] = 1.0
    x += 0.02 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    return x, (x > 0.5).float()


def test_mass_inside():
    mask = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5
    torch.testing.assert_close(mass_inside(mask.float(), mask), torch.ones(3))
    torch.testing.assert_close(mass_inside((~mask).float(), mask), torch.zeros(3))
    zero = mass_inside(torch.zeros(3, 1, 16, 16), mask)
    assert torch.equal(zero, torch.zeros(3))
    half = torch.zeros(16, 16, dtype=torch.bool)
    half[:, :8] = True  # one mask for the whole batch
    torch.testing.assert_close(mass_inside(torch.ones(3, 1, 16, 16), half), torch.full((3,), 0.5))
    with pytest.raises(ValueError, match="does not fit"):
        mass_inside(torch.ones(3, 1, 16, 16), torch.ones(3, 1, 8, 8))


def test_deletion_curve_shape_and_endpoints():
    model = SpotDetector()
    x, blob = blob_images()
    fractions, scores = deletion_curve(model, x, blob, steps=5)
    np.testing.assert_allclose(fractions, np.linspace(0, 1, 6))
    assert scores.shape == (2, 6) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    intact = torch.softmax(model.classify(model.encode(x)), dim=1)[:, 1].double().numpy()
    np.testing.assert_allclose(scores[:, 0], intact, rtol=1e-6)
    assert (scores[:, 0] > 0.99).all()
    # everything deleted with a black fill: the class-1 score of an all-black image
    _, black = deletion_curve(model, x, blob, target=1, steps=2, fill="black")
    np.testing.assert_allclose(black[:, -1], 1 / (1 + np.exp(10.0)), rtol=1e-5)


def test_faithful_attribution_deletes_faster_than_random():
    model = SpotDetector()
    x, blob = blob_images()
    random_attr = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    _, good = deletion_curve(model, x, blob, steps=10)
    _, rand = deletion_curve(model, x, random_attr, steps=10)
    assert (good[:, 1:] < 0.1).all()  # the first 10 % already removes the blob
    assert (rand[:, 1:6] > 0.9).all()  # a random half still leaves part of it
    good_auc, rand_auc = deletion_auc(good), deletion_auc(rand)
    assert good_auc.shape == (2,)
    assert (good_auc < 0.15).all() and (rand_auc > 0.7).all()


def test_deletion_auc():
    flat = np.full((2, 11), 0.7)
    np.testing.assert_allclose(deletion_auc(flat), [0.7, 0.7])
    falling = np.linspace(1.0, 0.0, 11)[None]
    np.testing.assert_allclose(deletion_auc(falling), [0.5])
    with pytest.raises(ValueError):
        deletion_auc(np.ones(5))
