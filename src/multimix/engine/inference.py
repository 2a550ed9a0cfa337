"""Batched inference over a bank: class probabilities and mask probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from multimix.engine.precision import precision_context, resolve_precision
from multimix.models.fusion import folded_for_inference
from multimix.models.net import MultiMixNet


@dataclass
class Predictions:
    probs: torch.Tensor  # float (N, C)
    masks: torch.Tensor  # float16 (N, K, S, S) probabilities
    saliency: torch.Tensor | None  # float16 (N, 1, S, S) when the model has a bridge
    maps: torch.Tensor | None = None  # float (N, F, h, w) finding activation maps (multilabel)
    multilabel: bool = False  # probs are independent sigmoids, one per finding


def predict(
    model: MultiMixNet,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 32,
    keep_saliency: bool = False,
    precision: str = "fp32",  # auto, fp32 or bf16 (engine.precision): the network call only
) -> Predictions:
    """Run the model in eval mode over uint8 (N, 1, S, S) images in batches.

    It runs a copy with batch norm folded into the convolutions (``models.fusion``): the same
    outputs, faster; ``model`` itself is only switched to eval mode.
    """
    model.eval()
    net = folded_for_inference(model)
    precision = resolve_precision(precision, device)
    probs, masks, sal, maps = [], [], [], []
    multilabel = model.cfg.task == "multilabel"
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255.0)
        x = x.contiguous(memory_format=torch.channels_last)
        with precision_context(precision, device):
            out = net(x)
        probs.append(model.class_probabilities(out["logits"]).cpu())
        if multilabel:
            maps.append(out["activation_maps"].float().cpu())
        masks.append(torch.sigmoid(out["mask_logits"].float()).half().cpu())
        if keep_saliency and "saliency" in out:
            sal.append(out["saliency"].half().cpu())
    empty = torch.zeros((0,))
    return Predictions(
        torch.cat(probs) if probs else empty,
        torch.cat(masks) if masks else empty,
        torch.cat(sal) if sal else None,
        torch.cat(maps) if maps else None,
        multilabel,
    )
