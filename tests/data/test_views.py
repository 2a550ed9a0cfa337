"""Derived views: ``base>view`` applies a view to another view's output (shared geometry)."""

from __future__ import annotations

import pytest
import torch

from multimix.config import TrainConfig
from multimix.core.batch import MASKED, Stream
from multimix.core.errors import ConfigError
from multimix.data.augment import AugmentConfig, photometric
from multimix.engine.trainer import Trainer


def test_photometric_view_keeps_every_pixel_in_place():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 16, 16, generator=g)
    masks = (torch.rand(4, 1, 16, 16, generator=g) > 0.5).float()
    out, out_masks = photometric(images, masks, g, AugmentConfig(n_ops=2, magnitude=1.0))
    assert torch.equal(out_masks, masks)  # no geometry, no cutout
    assert not torch.equal(out, images)
    same, _ = photometric(images, None, g, AugmentConfig(n_ops=0))
    assert torch.equal(same, images)
    _, zoomed = photometric(images, masks, g, AugmentConfig(max_scale=0.5))
    assert torch.equal(zoomed, masks)  # the weak view's zoom stays with the weak view


def _trainer(tmp_path, phantom_dirs) -> Trainer:
    cfg = TrainConfig(
        out=str(tmp_path / "run"), method="unet", seg_data=[str(phantom_dirs["seg"])],
        image_size=32, widths=[8, 16, 16, 32, 32], steps=1, batch_size=6,
    )  # fmt: skip
    (tmp_path / "run").mkdir()
    cfg.save(tmp_path / "run")
    return Trainer(cfg)


def test_a_derived_view_shares_its_base_views_geometry(tmp_path, phantom_dirs):
    streams = _trainer(tmp_path, phantom_dirs).streams
    request = {MASKED: Stream(MASKED, ("weak", "weak>photometric", "strong"), masks=True)}
    draw = streams.draw(request)[MASKED]
    weak, derived = draw["weak"], draw["weak>photometric"]
    assert torch.equal(derived.masks, weak.masks)  # masks warped once, by the weak view
    assert not torch.equal(derived.x, weak.x)  # but the appearance changed
    # the independent strong view moved the anatomy elsewhere for at least one image
    assert not torch.equal(draw["strong"].masks, weak.masks)


def test_a_derived_view_needs_its_base_first(tmp_path, phantom_dirs):
    streams = _trainer(tmp_path, phantom_dirs).streams
    with pytest.raises(ConfigError, match="derives from 'weak'"):
        streams.draw({MASKED: Stream(MASKED, ("weak>photometric", "weak"), masks=True)})
