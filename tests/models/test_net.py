from __future__ import annotations

import pytest
import torch

from multimix.models.net import ModelConfig, MultiMixNet
from multimix.models.saliency import input_saliency


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_shapes(norm):
    net = MultiMixNet(ModelConfig(n_classes=3, n_structures=2, widths=(4, 8, 8, 16, 16), norm=norm))
    out = net.eval()(torch.rand(2, 1, 32, 32))
    assert out["logits"].shape == (2, 3)
    assert out["mask_logits"].shape == (2, 2, 32, 32)
    assert out["saliency"].shape == (2, 1, 32, 32)


def test_saliency_has_input_shape_is_nonzero_and_matches_a_separate_pass():
    torch.manual_seed(0)
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), norm="instance")).eval()
    x = torch.rand(3, 1, 32, 32, requires_grad=True)
    logits = net.classify(net.encode(x))
    sal = input_saliency(logits, x)
    assert sal.shape == x.shape and (sal > 0).any() and sal.amax() == pytest.approx(1.0)
    # Per-image normalisation: the batched map equals the single-image one.
    x1 = x[1:2].detach().requires_grad_(True)
    single = input_saliency(net.classify(net.encode(x1)), x1)
    torch.testing.assert_close(sal[1:2], single, atol=1e-5, rtol=1e-4)


def test_bridge_changes_the_mask_and_is_required():
    torch.manual_seed(0)
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16))).train()  # BN keeps signal scale
    x = torch.rand(2, 1, 32, 32)
    feats = net.encode(x)
    a = net.segment(feats, x, torch.zeros_like(x))
    b = net.segment(feats, x, torch.ones_like(x))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="bridge"):
        net.segment(feats)


def test_no_bridge_model_needs_no_saliency():
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=False)).eval()
    out = net(torch.rand(1, 1, 32, 32))
    assert "saliency" not in out and out["mask_logits"].shape == (1, 1, 32, 32)


def test_normalize_standardises_each_image_with_the_sample_std():
    x = torch.rand(3, 1, 17, 9) * torch.tensor([1.0, 5.0, 0.01]).view(3, 1, 1, 1)
    expected = (x - x.mean(dim=(-2, -1), keepdim=True)) / (x.std(dim=(-2, -1), keepdim=True) + 1e-3)
    torch.testing.assert_close(MultiMixNet.normalize(x), expected)
    flat = MultiMixNet.normalize(torch.full((1, 1, 4, 4), 0.7))
    assert flat.isfinite().all() and flat.abs().max() < 1e-3  # a constant image: about 0


@pytest.mark.parametrize("bridge", [True, False])
def test_forward_without_segment_gives_the_same_logits_and_skips_the_decoder(bridge):
    """``segment=False`` (validation of a class-only source) runs the encoder and classifier
    only: the same logits, no masks, no saliency, the decoder never called."""
    torch.manual_seed(0)
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), bridge=bridge)).eval()
    x = torch.rand(3, 1, 32, 32)
    full = net(x)
    calls = []
    net.decoder.register_forward_hook(lambda m, i, o: calls.append(1))
    short = net(x, segment=False)
    assert calls == [] and set(short) == {"logits"}
    torch.testing.assert_close(short["logits"], full["logits"])
