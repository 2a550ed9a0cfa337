"""On classifiers trained on phantoms, explanations point at the lungs more than chance."""

from __future__ import annotations

import pytest
import torch

from multimix.config import TrainConfig
from multimix.data.bank import load_bank
from multimix.data.labels import LabelSpace
from multimix.data.sources import load_source
from multimix.engine.evaluate import load_run
from multimix.engine.trainer import train
from multimix.explain.attributions import explain
from multimix.explain.quality import mass_inside

# One 200-step model is too weak a classifier (about 0.65 accuracy on these phantoms) for its
# Grad-CAM to be stable: on the 8x8 level its lung share ranged 0.33-0.59 over seeds 0-5, and
# two CPUs' float rounding alone moved seed 0 across the bar. The claim is about the method, so
# the share is averaged over models trained with three seeds.
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, phantom_dirs):
    models = []
    for seed in SEEDS:
        run = tmp_path_factory.mktemp("share") / f"run{seed}"
        cfg = TrainConfig(
            out=str(run), method="umtl", class_data=[str(phantom_dirs["cls"])],
            seg_data=[str(phantom_dirs["seg"])], image_size=64, widths=[8, 16, 32, 32, 64],
            batch_size=8, steps=200, val_every=200, seed=seed,
        )  # fmt: skip
        train(cfg)
        models.append(load_run(run)[1].eval())
    source = load_source(phantom_dirs["seg"])  # its class labels were never used; exact masks
    bank = load_bank(source.records, 64, ("lungs",), LabelSpace(("normal", "pneumonia")))
    return models, bank


@pytest.mark.slow
@pytest.mark.parametrize("method", ["saliency", "gradcam", "ig"])
def test_attribution_mass_in_lungs_beats_a_random_map(trained, method):
    models, bank = trained
    x, lungs = bank.float_images(torch.arange(len(bank))), bank.masks[:, :1].bool()
    share = torch.stack([mass_inside(explain(m, x, method), lungs).mean() for m in models]).mean()
    random = mass_inside(torch.rand(x.shape, generator=torch.Generator().manual_seed(0)), lungs)
    assert share > random.mean() + 0.05, (float(share), float(random.mean()))
