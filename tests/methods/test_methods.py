from __future__ import annotations

import pytest
import torch

from multimix.core.batch import LABELED, MASKED, UNLABELED, UNMASKED, Batch, Draw
from multimix.core.errors import ConfigError
from multimix.methods.base import available_methods, get_method
from multimix.models.net import ModelConfig, MultiMixNet

PAPER_ROWS = ("unet", "enc", "encssl", "umtl", "umtls", "multimix-paper")


def _batch(b=2, s=32) -> Batch:
    g = torch.Generator().manual_seed(0)

    def img():
        return torch.rand(b, 1, s, s, generator=g)

    seg_x, seg_y = img(), (img() > 0.5).float()
    known = torch.ones(b, 1, dtype=torch.bool)
    segu, cls, weak, strong = img(), img(), img(), img()
    return Batch(
        {
            MASKED: Draw.of(weak=seg_x, masks=seg_y, known=known),
            UNMASKED: Draw.of(weak=segu),
            LABELED: Draw.of(weak=cls, targets=torch.tensor([0, 1])),
            UNLABELED: Draw.of(weak=weak, strong=strong),
        }
    )


def test_every_paper_row_is_registered():
    assert set(PAPER_ROWS) <= set(available_methods())
    with pytest.raises(ConfigError, match="unknown method"):
        get_method("nope")


@pytest.mark.parametrize("name", PAPER_ROWS)
def test_each_method_trains_the_parts_it_names(name):
    method = get_method(name)
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=method.uses_bridge))
    net.train()
    loss, logs = method.loss(net, _batch())
    loss.backward()
    dec = any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.decoder.parameters())
    cls = any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.classifier.parameters())
    assert dec == method.trains_segmentation
    assert cls == (method.trains_classifier or "loss_pseudo" in logs)
    assert ("loss_kl" in logs) == (name == "multimix-paper")
    assert ("loss_pseudo" in logs) == (name in ("encssl", "umtls", "multimix-paper"))


def test_multimix_paper_runs_the_decoder_only_on_mask_streams():
    method = get_method("multimix-paper")
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16)))
    seen = []
    net.decoder.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    method.loss(net, _batch(b=2))
    assert seen == [4]  # 2 labeled + 2 unlabeled mask images, not the 6 class images
