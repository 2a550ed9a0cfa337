"""What every registered backbone promises the network, checked for each of them.

Parametrised over the registry at collection time, so a new backbone file is covered by these
tests without editing them.
"""

from __future__ import annotations

import pytest
import torch

from multimix.models.backbones import EncoderTrace, available_backbones, get_backbone
from multimix.models.fusion import folded_for_inference
from multimix.models.net import ModelConfig, MultiMixNet
from multimix.models.saliency import input_saliency, traced_saliency
from tests.models.batchnorm import randomise_batch_norms

WIDTHS = (4, 8, 8, 16, 16)
NAMES = sorted(available_backbones())


def _net(name: str, **kw: object) -> MultiMixNet:
    torch.manual_seed(0)
    return MultiMixNet(ModelConfig(widths=WIDTHS, backbone=name, **kw))


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", NAMES)
def test_feature_maps_have_the_declared_channels_and_strides(name, size):
    backbone = get_backbone(name, in_channels=1, widths=WIDTHS, norm="batch")
    assert len(backbone.channels) == len(backbone.strides) == len(WIDTHS)
    feats = backbone(torch.rand(2, 1, size, size))
    assert len(feats) == len(backbone.channels)
    for f, c, s in zip(feats, backbone.channels, backbone.strides, strict=True):
        assert f.shape == (2, c, size // s, size // s)


@pytest.mark.parametrize("name", NAMES)
def test_bridged_network_trains_forward_and_backward(name):
    net = _net(name).train()
    x = torch.rand(4, 1, 32, 32)
    trace = EncoderTrace() if net.traceable else None
    if trace is None:
        x.requires_grad_(True)
    feats = net.encode(x, trace)
    logits = net.classify(feats)
    sal = traced_saliency(logits, feats, trace, 2) if trace else input_saliency(logits, x, 2)
    masks = net.segment([f[:2] for f in feats], x[:2].detach(), sal)
    assert masks.shape == (2, 1, 32, 32) and sal.shape == (2, 1, 32, 32)
    (masks.mean() + logits.logsumexp(1).mean()).backward()
    for part in (net.encoder, net.classifier, net.bridge, net.decoder):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and all(g is not None and g.isfinite().all() for g in grads), part
    assert any(p.grad.abs().sum() > 0 for p in net.encoder.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_traced_saliency_equals_autograd_where_traceable(name):
    net = _net(name)
    net.train()(torch.rand(6, 1, 32, 32))  # running statistics away from their initial values
    net.eval()
    x = torch.rand(5, 1, 32, 32)
    if not net.traceable:
        with pytest.raises(ValueError, match="traced"):
            net.encode(x, EncoderTrace())
        return
    xg = x.clone().requires_grad_(True)
    expected = input_saliency(net.classify(net.encode(xg)), xg, rows=3)
    trace = EncoderTrace()
    feats = net.encode(x.clone(), trace)
    got = traced_saliency(net.classify(feats), feats, trace, rows=3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_folding_for_inference_keeps_the_outputs(name):
    net = randomise_batch_norms(_net(name))
    folded = folded_for_inference(net)
    left = any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.encoder.modules())
    assert left != net.foldable  # a foldable backbone loses every batch norm, others keep theirs
    x = torch.rand(3, 1, 32, 32)
    a, b = net(x), folded(x)
    torch.testing.assert_close(b["logits"], a["logits"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b["mask_logits"], a["mask_logits"], atol=1e-4, rtol=1e-4)
