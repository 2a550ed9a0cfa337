from __future__ import annotations

import copy

import torch

from multimix.models.fusion import folded_for_inference
from multimix.models.net import ModelConfig, MultiMixNet
from tests.models.batchnorm import randomise_batch_norms


def _trained_like() -> MultiMixNet:
    torch.manual_seed(0)
    return randomise_batch_norms(MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16))))


def test_folded_model_predicts_what_the_model_does_without_batch_norm_layers():
    net = _trained_like()
    before = copy.deepcopy(net.state_dict())
    folded = folded_for_inference(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(4, 1, 32, 32)
    a, b = net(x), folded(x)
    torch.testing.assert_close(b["logits"], a["logits"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b["mask_logits"], a["mask_logits"], atol=1e-4, rtol=1e-4)
    # An input gradient flips where a ReLU input sits at 0 up to rounding: compare on average.
    assert (b["saliency"] - a["saliency"]).abs().mean() < 1e-3
    for key, value in net.state_dict().items():  # the original is untouched
        torch.testing.assert_close(value, before[key])
