from __future__ import annotations

import copy

import pytest
import torch

from multimix.models.encoder import EncoderTrace
from multimix.models.net import ModelConfig, MultiMixNet, leading_rows
from multimix.models.saliency import input_saliency, traced_saliency

WIDTHS = (4, 8, 8, 16, 16)


def _traced(net: MultiMixNet, x: torch.Tensor, rows: int) -> torch.Tensor:
    trace = EncoderTrace()
    feats = net.encode(x.clone(), trace)  # the input needs no gradient of its own
    return traced_saliency(net.classify(feats), feats, trace, rows)


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_traced_saliency_equals_autograd_in_eval_mode(norm):
    torch.manual_seed(0)
    net = MultiMixNet(ModelConfig(widths=WIDTHS, norm=norm))
    net.train()(torch.rand(6, 1, 32, 32))  # running statistics away from their initial values
    net.eval()
    x = torch.rand(5, 1, 32, 32)
    xg = x.clone().requires_grad_(True)
    expected = input_saliency(net.classify(net.encode(xg)), xg, rows=3)
    got = _traced(net, x, rows=3)
    assert got.shape == (3, 1, 32, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_traced_saliency_in_training_holds_the_batch_statistics():
    """In training mode it is each image's gradient of the network whose batch norms use this
    batch's statistics as constants: eval mode with running statistics set to them."""
    torch.manual_seed(1)
    net = MultiMixNet(ModelConfig(widths=WIDTHS, dropout=0.0)).train()
    reference = copy.deepcopy(net)
    x = torch.rand(6, 1, 32, 32)
    got = _traced(net, x, rows=4)

    norms = [m for m in reference.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out: stats.__setitem__(
                mod, torch.var_mean(inp[0].detach(), dim=(0, 2, 3), correction=0)
            )
        )
        for m in norms
    ]
    reference.encode(x)  # the same batch: the same statistics
    for h in hooks:
        h.remove()
    for m in norms:
        var, mean = stats[m]
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
    reference.eval()
    xg = x.clone().requires_grad_(True)
    expected = input_saliency(reference.classify(reference.encode(xg)), xg, rows=4)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # and it differs from autograd through the training-mode batch norm (a different quantity)
    train_ref = copy.deepcopy(net)
    xg = x.clone().requires_grad_(True)
    coupled = input_saliency(train_ref.classify(train_ref.encode(xg)), xg, rows=4)
    assert not torch.allclose(coupled, got, atol=1e-5)


def test_traced_forward_computes_what_the_plain_one_does():
    torch.manual_seed(2)
    net = MultiMixNet(ModelConfig(widths=WIDTHS)).train()
    twin = copy.deepcopy(net)
    x = torch.rand(4, 1, 32, 32)
    plain = net.encode(x)
    traced = twin.encode(x, EncoderTrace())
    for a, b in zip(plain, traced, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(net.state_dict().values(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)  # running statistics and batch counts updated alike


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_per_image_norms_are_not_traced(norm):
    net = MultiMixNet(ModelConfig(widths=WIDTHS, norm=norm))
    assert not net.traceable
    with pytest.raises(ValueError, match="traced"):
        net.encode(torch.rand(2, 1, 32, 32), EncoderTrace())


def test_leading_rows_gradient_is_the_slice_gradient_in_the_batch_layout():
    t = torch.rand(5, 3, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w = torch.rand(2, 3, 8, 8)
    (plain,) = torch.autograd.grad((t[:2] * w).sum(), t)
    (kept,) = torch.autograd.grad((leading_rows(t, 2) * w).sum(), t)
    torch.testing.assert_close(kept, plain)
    assert kept.is_contiguous(memory_format=torch.channels_last)
    assert leading_rows(t, 5) is t
