from __future__ import annotations

import pytest
import torch
from torch import nn

from multimix.models.blocks import PixelLinear
from multimix.models.decoder import UpConv


def _outputs_and_grads(module: nn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.clone().requires_grad_(True)
    y = module(x)
    grads = torch.autograd.grad(y, [x, *module.parameters()], g)
    return y, grads


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: UpConv(6, 4), lambda: nn.ConvTranspose2d(6, 4, 2, stride=2)),
        (lambda: PixelLinear(6, 3), lambda: nn.Conv2d(6, 3, 1)),
    ],
    ids=["upconv", "pixel_linear"],
)
def test_decoder_layers_match_the_torch_layers_they_stand_for(ours, theirs, channels_last):
    torch.manual_seed(0)
    mine, reference = ours(), theirs()
    reference.load_state_dict(mine.state_dict())  # same parameter names and shapes
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    mine, reference = mine.to(memory_format=fmt), reference.to(memory_format=fmt)
    x = torch.randn(2, 6, 5, 7).contiguous(memory_format=fmt)
    y_ref = reference(x)
    # A gradient that is a channel slice, as the decoder's concatenation hands back.
    g = torch.randn(2, 2 * y_ref.shape[1], *y_ref.shape[2:]).contiguous(memory_format=fmt)
    g = g[:, : y_ref.shape[1]]
    y, grads = _outputs_and_grads(mine, x, g)
    y_ref, grads_ref = _outputs_and_grads(reference, x, g)
    torch.testing.assert_close(y, y_ref)
    for got, expected in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, expected)
