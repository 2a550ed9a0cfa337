from __future__ import annotations

import copy

import pytest
import torch

from multimix.models.backbones import EncoderTrace
from multimix.models.fusion import (
    ConvReLU,
    UpConvInference,
    folded_for_inference,
    inference_network,
)
from multimix.models.inference import CPU_CHUNK, forward_in_chunks
from multimix.models.net import ModelConfig, MultiMixNet
from multimix.models.saliency import input_saliency, traced_saliency
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


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


def test_fp32_inference_network_fuses_and_predicts_what_the_model_does():
    net = _trained_like().eval()
    fast = inference_network(net)
    kinds = [type(m) for m in fast.modules()]
    assert ConvReLU in kinds and UpConvInference in kinds
    assert not any(isinstance(m, torch.nn.ReLU) for m in fast.modules())
    x = torch.rand(4, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    a, b = net(x), fast(x)
    torch.testing.assert_close(b["logits"], a["logits"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b["mask_logits"], a["mask_logits"], atol=1e-4, rtol=1e-4)
    assert (b["saliency"] - a["saliency"]).abs().mean() < 1e-3
    assert _corr(b["saliency"], a["saliency"]) > 0.999


def test_traced_inference_saliency_is_the_autograd_one():
    net = _trained_like().eval()
    x = torch.rand(3, 1, 32, 32)
    xx = x.clone().requires_grad_(True)
    with torch.enable_grad():
        expected = input_saliency(net.classify(net.encode(xx)), xx)
    torch.testing.assert_close(net(x)["saliency"], expected, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # a caller's no_grad (batch-norm adaptation) does not stop the walk
        torch.testing.assert_close(net(x)["saliency"], expected, atol=1e-5, rtol=1e-4)


def test_bf16_network_agrees_with_fp32_and_keeps_fp32_weights_in_the_model():
    net = _trained_like().eval()
    fast = inference_network(net, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    assert all(p.dtype == torch.float32 for p in net.parameters())
    x = torch.rand(4, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    a, b = net(x), fast(x)
    assert b["saliency"].dtype == torch.float32  # the map's scaling stays fp32
    # bf16 keeps 8 bits of mantissa: logits agree to a few hundredths at this size.
    torch.testing.assert_close(b["logits"].float(), a["logits"], atol=0.05, rtol=0.05)
    pa, pb = torch.sigmoid(a["mask_logits"]), torch.sigmoid(b["mask_logits"].float())
    assert (pa - pb).abs().max() < 0.05
    assert _corr(b["saliency"], a["saliency"]) > 0.9


def test_bf16_saliency_walk_matches_the_fp32_walk_of_the_same_pass():
    fast = inference_network(_trained_like().eval(), torch.bfloat16)
    x = torch.rand(4, 1, 32, 32)

    def walk(dtype: torch.dtype) -> torch.Tensor:
        trace = EncoderTrace()
        with torch.no_grad():
            feats = fast.encode(x, trace)
        last = feats[-1].detach().requires_grad_(True)
        with torch.enable_grad():
            logits = fast.classify([*feats[:-1], last])
            return traced_saliency(logits, [*feats[:-1], last], trace, 4, walk_dtype=dtype)

    ref, low = walk(torch.float32), walk(torch.bfloat16)
    assert _corr(low, ref) > 0.99
    assert (low - ref).abs().mean() < 0.01


@pytest.mark.parametrize("n", [CPU_CHUNK + 1, 3 * CPU_CHUNK])
def test_inference_in_chunks_is_one_call(n):
    fast = inference_network(_trained_like().eval())
    x = torch.rand(n, 1, 32, 32)
    whole, chunked = fast(x), forward_in_chunks(fast, x)
    assert whole.keys() == chunked.keys()
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key], atol=1e-5, rtol=1e-4)


def test_bf16_takes_the_unfused_path_where_onednn_refuses_it(monkeypatch):
    """On a CPU whose oneDNN refuses bf16 (AVX2 only), ConvReLU runs conv then ReLU instead."""
    from multimix.models import fusion

    torch.manual_seed(0)
    conv = ConvReLU(3, 4, 3, padding=1).to(torch.bfloat16)
    x = torch.randn(2, 3, 8, 8).to(torch.bfloat16)
    monkeypatch.setattr(fusion, "onednn_runs_bf16", lambda: False)
    with torch.no_grad():
        assert not fusion._onednn_fuses(x)  # never offered to oneDNN in bf16
        assert fusion._onednn_fuses(x.float()) == torch.backends.mkldnn.is_available()
        out = conv(x)
        reference = torch.relu(torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1))
    assert out.dtype == torch.bfloat16 and torch.equal(out, reference)
