"""Batch-norm layers moved away from their initial values, as training leaves them."""

from __future__ import annotations

import torch
from torch import nn


def randomise_batch_norms(net: nn.Module) -> nn.Module:
    """Running statistics and affine parameters drawn away from 0/1 (so folding is tested on
    values that matter); returns ``net`` in eval mode."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()
