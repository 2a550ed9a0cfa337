"""Tests for multimix.data.augment: reproducibility, value ranges, and image/mask alignment."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from multimix.core.errors import ConfigError
from multimix.data import augment
from multimix.data.augment import (
    GEOMETRIC_OPS,
    OPS,
    PHOTOMETRIC_OPS,
    AugmentConfig,
    strong,
    weak,
)

FUNCS = [weak, strong]
# no weak geometry: isolates the other parts
STILL = {"flip": False, "max_shift": 0.0, "max_scale": 0.0}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scene(b: int = 8, size: int = 64, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Images whose brightness encodes the masks: a disc (left) and a rectangle (right).

    Background is 0.1 and both structures 0.9, so thresholding the image at 0.5 recovers
    the union of the masks wherever image and mask went through the same transform.
    """
    g = _gen(1000 + seed)
    ys = torch.arange(size).view(1, size, 1)
    xs = torch.arange(size).view(1, 1, size)

    def ints(lo: int, hi: int) -> Tensor:
        return torch.randint(lo, hi, (b, 1, 1), generator=g)

    r = ints(size // 8, size // 5)
    cy, cx = ints(size // 3, 2 * size // 3), ints(size // 4, size // 2 - size // 10)
    disc = (ys - cy) ** 2 + (xs - cx) ** 2 <= r**2
    top, height = ints(size // 6, size // 3), ints(size // 4, size // 2)
    left, width = ints(size // 2 + 4, 2 * size // 3), ints(size // 8, size // 4)
    rect = (ys >= top) & (ys < top + height) & (xs >= left) & (xs < left + width)
    masks = torch.stack([disc, rect], dim=1).float()
    images = 0.1 + 0.8 * masks.amax(dim=1, keepdim=True)
    return images, masks


def _iou(images: Tensor, masks: Tensor) -> Tensor:
    """Per-sample IoU of the bright image region against the union of the masks."""
    bright = images[:, 0] > 0.5
    union = masks.amax(dim=1) > 0.5
    inter = (bright & union).sum(dim=(1, 2)).float()
    total = (bright | union).sum(dim=(1, 2)).float()
    return inter / total


def _assert_valid(images: Tensor, masks: Tensor | None, out: Tensor, out_masks: Tensor | None):
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    if masks is None:
        assert out_masks is None
    else:
        assert out_masks is not None
        assert out_masks.shape == masks.shape and out_masks.dtype == masks.dtype
        assert set(out_masks.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("fn", FUNCS)
def test_same_seed_same_output_and_different_seed_differs(fn):
    images, masks = _scene()
    a, am = fn(images, masks, _gen(3))
    b, bm = fn(images, masks, _gen(3))
    c, cm = fn(images, masks, _gen(4))
    assert torch.equal(a, b) and torch.equal(am, bm)
    assert not torch.equal(a, c) and not torch.equal(am, cm)


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_keep_shape_dtype_range_and_binary_masks(fn, dtype):
    g = _gen(0)
    images = torch.rand(8, 1, 32, 32, generator=g, dtype=dtype)
    masks = (torch.rand(8, 3, 32, 32, generator=g) > 0.5).to(dtype)
    cfg = AugmentConfig(n_ops=4, magnitude=1.0)
    for seed in range(3):
        out, out_masks = fn(images, masks, _gen(seed), cfg)
        _assert_valid(images, masks, out, out_masks)


@pytest.mark.parametrize("fn", FUNCS)
def test_masks_none_gives_none(fn):
    images, _ = _scene(b=4, size=32)
    out, out_masks = fn(images, None, _gen(0))
    _assert_valid(images, None, out, out_masks)


@pytest.mark.parametrize("fn", FUNCS)
def test_inputs_are_not_modified(fn):
    images, masks = _scene()
    images_before, masks_before = images.clone(), masks.clone()
    out, out_masks = fn(images, masks, _gen(0), AugmentConfig(n_ops=4, magnitude=1.0))
    assert torch.equal(images, images_before) and torch.equal(masks, masks_before)
    assert out.data_ptr() != images.data_ptr() and out_masks.data_ptr() != masks.data_ptr()


@pytest.mark.parametrize("fn", FUNCS)
def test_batch_of_one(fn):
    images, masks = _scene(b=1, size=32)
    out, out_masks = fn(images, masks, _gen(0), AugmentConfig(n_ops=3, magnitude=1.0))
    _assert_valid(images, masks, out, out_masks)


def test_weak_without_flip_or_shift_is_identity():
    images, masks = _scene()
    out, out_masks = weak(images, masks, _gen(0), AugmentConfig(**STILL))
    assert torch.equal(out, images) and torch.equal(out_masks, masks)


def test_weak_flip_mirrors_some_samples_and_keeps_others():
    images, masks = _scene(b=16)
    cfg = AugmentConfig(flip=True, max_shift=0.0, max_scale=0.0)
    out, out_masks = weak(images, masks, _gen(0), cfg)
    kept = (out - images).abs().amax(dim=(1, 2, 3)) < 1e-5
    mirrored = (out - images.flip(-1)).abs().amax(dim=(1, 2, 3)) < 1e-5
    assert (kept ^ mirrored).all()
    assert kept.any() and mirrored.any()
    assert torch.equal(out_masks[kept], masks[kept])
    assert torch.equal(out_masks[mirrored], masks[mirrored].flip(-1))


@pytest.mark.parametrize("seed", range(3))
def test_weak_keeps_image_and_mask_aligned(seed):
    images, masks = _scene(seed=seed)
    cfg = AugmentConfig(max_shift=0.25)
    out, out_masks = weak(images, masks, _gen(seed), cfg)
    assert not torch.equal(out_masks, masks)  # it did move something
    assert (_iou(out, out_masks) > 0.95).all()


def _area_ratio(out_masks: Tensor, masks: Tensor) -> Tensor:
    return out_masks.float().sum(dim=(1, 2, 3)) / masks.float().sum(dim=(1, 2, 3))


@pytest.mark.parametrize("seed", range(3))
def test_weak_zoom_moves_image_and_mask_together_within_its_range(seed):
    images, masks = _scene(b=16, seed=seed)
    cfg = AugmentConfig(flip=False, max_shift=0.0, max_scale=0.25)
    out, out_masks = weak(images, masks, _gen(seed), cfg)
    assert (_iou(out, out_masks) > 0.95).all()
    ratio = _area_ratio(out_masks, masks)  # a zoom by z scales areas by z**2
    assert (ratio > 1 / 1.25**2 - 0.05).all() and (ratio < 1.25**2 + 0.05).all()
    assert (ratio < 0.95).any() and (ratio > 1.05).any()  # both ways, in one batch


def test_weak_without_zoom_draws_what_it_always_drew():
    """max_scale=0 takes no random numbers, so seeded runs keep the views they had."""
    images, masks = _scene()
    b = len(images)
    g1, g2 = _gen(3), _gen(3)
    weak(images, masks, g1, AugmentConfig(max_scale=0.0))
    torch.rand((b,), generator=g2), torch.rand((b, 2), generator=g2)  # flips, shifts
    assert torch.equal(g1.get_state(), g2.get_state())
    weak(images, masks, g2, AugmentConfig(max_scale=0.1))
    torch.rand((b,), generator=g1), torch.rand((b, 2), generator=g1), torch.rand((b,), generator=g1)
    assert torch.equal(g1.get_state(), g2.get_state())  # and a zoom one number a sample


def test_strong_zooms_as_its_weak_base_does():
    images, masks = _scene()
    cfg = AugmentConfig(max_scale=0.3, n_ops=0, cutout=0.0)
    out, out_masks = strong(images, masks, _gen(5), cfg)
    ref, ref_masks = weak(images, masks, _gen(5), cfg)
    assert torch.equal(out, ref) and torch.equal(out_masks, ref_masks)
    unzoomed = AugmentConfig(max_scale=0.0)
    assert not torch.equal(out_masks, weak(images, masks, _gen(5), unzoomed)[1])


def test_strong_without_ops_or_cutout_equals_weak():
    images, masks = _scene()
    cfg = AugmentConfig(n_ops=0, cutout=0.0)
    out, out_masks = strong(images, masks, _gen(5), cfg)
    ref, ref_masks = weak(images, masks, _gen(5), cfg)
    assert torch.equal(out, ref) and torch.equal(out_masks, ref_masks)
    assert (_iou(out, out_masks) > 0.95).all()


@pytest.mark.parametrize("seed", range(3))
def test_strong_geometric_ops_keep_image_and_mask_aligned(seed):
    images, masks = _scene(seed=seed)
    cfg = AugmentConfig(n_ops=3, magnitude=1.0, cutout=0.0)
    out, out_masks = augment._strong(images, masks, _gen(seed), cfg, GEOMETRIC_OPS)
    weak_masks = weak(images, masks, _gen(seed), cfg)[1]
    assert not torch.equal(out_masks, weak_masks)  # the ops added motion beyond weak
    assert (_iou(out, out_masks) > 0.95).all()


def test_non_square_images_stay_aligned():
    images, masks = _scene(seed=4)
    images, masks = images[..., 8:56, :], masks[..., 8:56, :]  # 48 x 64
    cfg = AugmentConfig(n_ops=3, magnitude=1.0, cutout=0.0)
    out, out_masks = augment._strong(images, masks, _gen(4), cfg, GEOMETRIC_OPS)
    _assert_valid(images, masks, out, out_masks)
    assert (_iou(out, out_masks) > 0.95).all()


def test_strong_with_all_ops_keeps_mask_on_the_structures():
    """Photometric ops change intensities, not positions, so the image still correlates with
    the warped mask. A few op chains legitimately flatten a two-level image (e.g. equalize
    then solarize maps both levels to ~0), hence the check on 90% of the samples."""
    images, masks = _scene(b=32, seed=1)
    images = 0.15 + 0.6 * masks.amax(dim=1, keepdim=True)
    cfg = AugmentConfig(n_ops=3, magnitude=0.5, cutout=0.0, max_scale=0.0)
    out, out_masks = strong(images, masks, _gen(7), cfg)
    union = out_masks.amax(dim=1, keepdim=True)
    x = (out - out.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
    y = (union - union.mean(dim=(1, 2, 3), keepdim=True)).flatten(1)
    corr = ((x * y).sum(dim=1) / (x.norm(dim=1) * y.norm(dim=1))).abs()
    assert (corr > 0.6).float().mean() >= 0.9, corr
    # The same images against masks warped for other samples correlate far worse.
    shuffled = y.roll(1, dims=0)
    wrong = ((x * shuffled).sum(dim=1) / (x.norm(dim=1) * shuffled.norm(dim=1))).abs()
    assert wrong.median() < corr.median() - 0.3
    # Where the masks go depends on the random draws only, never on the image content.
    other_masks = strong(torch.rand(images.shape, generator=_gen(8)), masks, _gen(7), cfg)[1]
    assert torch.equal(other_masks, out_masks)


def test_photometric_ops_never_touch_masks():
    images, masks = _scene()
    cfg = AugmentConfig(**STILL, n_ops=4, magnitude=1.0, cutout=0.0)
    out, out_masks = augment._strong(images, masks, _gen(0), cfg, PHOTOMETRIC_OPS)
    assert torch.equal(out_masks, masks)
    assert not torch.equal(out, images)


@pytest.mark.parametrize("name", OPS)
def test_each_op_alone(name):
    images, masks = _scene(b=8, size=32)
    images = (images + 0.05 * torch.rand(images.shape, generator=_gen(9))).clamp(0, 1)
    cfg = AugmentConfig(**STILL, n_ops=1, magnitude=1.0, cutout=0.0)
    out, out_masks = augment._strong(images, masks, _gen(0), cfg, (name,))
    again, _ = augment._strong(images, masks, _gen(0), cfg, (name,))
    _assert_valid(images, masks, out, out_masks)
    assert torch.equal(out, again)
    if name == "identity":
        assert torch.equal(out, images) and torch.equal(out_masks, masks)
    elif name in PHOTOMETRIC_OPS:
        assert torch.equal(out_masks, masks)
        assert not torch.equal(out, images)
    else:
        assert not torch.equal(out_masks, masks)
    if name == "autocontrast":
        assert torch.allclose(out.amin(dim=(1, 2, 3)), torch.zeros(8), atol=1e-6)
        assert torch.allclose(out.amax(dim=(1, 2, 3)), torch.ones(8), atol=1e-6)


def test_cutout_fills_a_square_of_half_in_the_image_only():
    b, size = 8, 32
    images = torch.full((b, 1, size, size), 0.2)
    masks = torch.ones(b, 2, size, size)
    cfg = AugmentConfig(**STILL, n_ops=0, cutout=0.25)
    out, out_masks = strong(images, masks, _gen(0), cfg)
    assert torch.equal(out_masks, masks)
    side = round(0.25 * size)
    filled = out[:, 0] == 0.5
    assert torch.equal(out[:, 0][~filled], torch.full(((~filled).sum().item(),), 0.2))
    for i in range(b):  # the filled pixels form one axis-aligned box, clipped by borders
        rows = filled[i].any(dim=1).nonzero().view(-1)
        cols = filled[i].any(dim=0).nonzero().view(-1)
        assert side // 2 <= rows.numel() <= side and side // 2 <= cols.numel() <= side
        assert rows.numel() * cols.numel() == filled[i].sum()
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()


def test_rejects_bad_inputs_and_config():
    images, masks = _scene(b=2, size=32)
    with pytest.raises(ValueError):
        weak(images[:, 0], masks, _gen(0))
    with pytest.raises(ValueError):
        strong(images, masks[:1], _gen(0))
    for bad in (
        {"max_shift": -0.1},
        {"max_scale": -0.1},
        {"max_scale": 1.5},
        {"n_ops": -1},
        {"n_ops": len(OPS) + 1},
        {"magnitude": 1.5},
        {"cutout": 2.0},
    ):
        with pytest.raises(ConfigError):
            AugmentConfig(**bad)
