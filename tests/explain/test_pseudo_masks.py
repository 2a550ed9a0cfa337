from __future__ import annotations

import numpy as np
import pytest

from multimix.config import TrainConfig
from multimix.data.sources import load_source
from multimix.engine.logger import CsvLog
from multimix.engine.trainer import train
from multimix.explain.pseudo_masks import MaskRecipe, attribution_to_mask, write_pseudo_masks

TINY = dict(image_size=32, widths=[8, 16, 16, 32, 32], batch_size=4, seed=0)


def test_attribution_to_mask_keeps_the_two_largest_regions():
    attr = np.zeros((64, 64), np.float32)
    attr[10:50, 8:28] = 1.0  # "right lung"
    attr[10:50, 36:56] = 0.9  # "left lung"
    attr[2:5, 2:5] = 0.95  # a small spot
    mask = attribution_to_mask(attr, MaskRecipe(area=0.35, sigma=0.02))
    from scipy import ndimage

    assert ndimage.label(mask)[1] == 2
    assert not mask[3, 3] and mask[30, 18] and mask[30, 46]
    assert 0.2 < mask.mean() < 0.45
    assert not attribution_to_mask(np.zeros((16, 16))).any()


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, phantom_dirs):
    out = tmp_path_factory.mktemp("doll") / "enc"
    cfg = TrainConfig(
        out=str(out), method="enc", class_data=[str(phantom_dirs["cls"])], steps=3, **TINY
    )
    return train(cfg)


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_pseudo_masks_load_through_the_data_layer(tmp_path, classifier_run, phantom_dirs, method):
    out = tmp_path / "pseudo"
    n = write_pseudo_masks(classifier_run, [str(phantom_dirs["cls"])], out, method=method)
    source = load_source(out)
    assert len(source.records) == n > 0
    assert source.structures == ("lungs",)
    assert all(r.masks for r in source.records)
    # Only the training part of a source the classifier was trained on is used.
    split = (classifier_run / "split.json").read_text()
    assert n < 80 and '"test"' in split


def test_pretraining_on_pseudo_masks_then_fine_tuning(tmp_path, classifier_run, phantom_dirs):
    pseudo = tmp_path / "pseudo"
    write_pseudo_masks(classifier_run, [str(phantom_dirs["cls"])], pseudo, method="saliency")
    cfg = TrainConfig(
        out=str(tmp_path / "seg"),
        method="unet",
        seg_data=[str(phantom_dirs["seg"])],
        labeled_seg=4,
        pretrain_masks=[str(pseudo)],
        pretrain_fraction=0.5,
        steps=6,
        **TINY,
    )
    run = train(cfg)
    phases = [r["phase"] for r in CsvLog(run / "train_log.csv").read()]
    assert phases == ["pretrain"] * 3 + ["train"] * 3
