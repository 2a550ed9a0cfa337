"""Batch norm folded into the convolution before it, for inference."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from multimix.models.net import MultiMixNet


def folded_for_inference(model: MultiMixNet) -> MultiMixNet:
    """An eval-mode copy in which every conv -> batch norm pair is one convolution.

    In eval mode batch norm is a per-channel scale and shift, so it folds into the weights and
    bias of the conv before it: the same outputs, with one pass over every feature map less in
    the forward and in the saliency's backward. The model passed in is left as it was.
    """
    folded = copy.deepcopy(model).eval()  # fused weights keep the copied ones' memory format
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, norm)
                seq[i + 1] = nn.Identity()
    return folded
