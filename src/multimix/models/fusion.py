"""Batch norm folded into the convolution before it, for inference."""

from __future__ import annotations

import copy

from multimix.models.backbones import fold_sequentials
from multimix.models.net import MultiMixNet


def folded_for_inference(model: MultiMixNet) -> MultiMixNet:
    """An eval-mode copy in which every conv -> batch norm pair is one convolution.

    In eval mode batch norm is a per-channel scale and shift, so it folds into the weights and
    bias of the conv before it: the same outputs, with one pass over every feature map less in
    the forward and in the saliency's backward. The model passed in is left as it was. A
    backbone that is not ``foldable`` keeps its batch norms; the rest of the network is folded.
    """
    folded = copy.deepcopy(model).eval()  # fused weights keep the copied ones' memory format
    for name, part in folded.named_children():
        if name != "encoder":  # the heads, bridge and decoder: conv -> norm in Sequentials
            fold_sequentials(part)
    if folded.foldable:  # the backbone's layout is its own: it says whether, and how
        folded.encoder.fold_batch_norm()
    return folded
