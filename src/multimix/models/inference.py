"""Batched inference over images: class probabilities, mask probabilities and optional maps.

Here (below the tasks) so that a task's post-training step can predict too; which activation
turns logits into probabilities is the task's to say, so it is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from multimix.models.fusion import inference_network
from multimix.models.net import MultiMixNet


def image_batches(
    images: torch.Tensor, batch_size: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """Float ``[0, 1]`` channels-last batches of uint8 (N, 1, S, S) images, on ``device``.

    Anything but uint8 is refused: a float image in ``[0, 1]`` given here would be divided by
    255 a second time and reach the network near black, a silently wrong result.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images (data.io.stored_image), got {images.dtype}")
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255.0)
        yield x.contiguous(memory_format=torch.channels_last)


@dataclass
class Predictions:
    probs: torch.Tensor  # float (N, C)
    masks: torch.Tensor  # float16 (N, K, S, S) probabilities
    saliency: torch.Tensor | None  # float16 (N, 1, S, S) when the model has a bridge
    maps: torch.Tensor | None = None  # float (N, C, h, w) per-class activation maps, if asked


def run_model(
    model: MultiMixNet,
    images: torch.Tensor,
    device: torch.device,
    probabilities: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 32,
    keep_saliency: bool = False,
    keep_maps: bool = False,
    context: Callable[[], AbstractContextManager] = nullcontext,
    dtype: torch.dtype = torch.float32,
    masks: bool = True,
    flip_masks: bool = False,
) -> Predictions:
    """Run the model in eval mode over uint8 (N, 1, S, S) images in batches.

    ``probabilities`` maps the logits (the task's softmax or sigmoids); ``keep_maps`` keeps the
    per-class activation maps; ``context`` wraps the network call alone (the engine's
    precision: probabilities, masks and their concatenation stay fp32). It runs a copy with
    batch norm folded into the convolutions and conv + ReLU fused, in ``dtype``
    (``models.fusion.inference_network``): the same outputs, faster; ``model`` itself is only
    switched to eval. ``masks=False`` skips the decoder (and the saliency walk): the
    predictions then carry no masks (an empty tensor) and no saliency. ``flip_masks`` averages
    each mask probability with the one predicted on the left-right mirrored image, mirrored
    back (test-time flipping, where the run's post-processing plan chose it); the class
    probabilities, maps and saliency stay those of the image as given.
    """
    model.eval()
    net = inference_network(model, dtype)
    probs, mask_parts, sal, maps = [], [], [], []
    for x in image_batches(images, batch_size, device):
        with context():
            out = forward_in_chunks(net, x, keep_maps, segment=masks)
        probs.append(probabilities(out["logits"]).cpu())
        if keep_maps:
            maps.append(out["activation_maps"].float().cpu())
        if masks:
            mask = torch.sigmoid(out["mask_logits"].float())
            if flip_masks:
                with context():
                    mirrored = forward_in_chunks(net, x.flip(-1), segment=True)["mask_logits"]
                mask = (mask + torch.sigmoid(mirrored.float()).flip(-1)) / 2
            mask_parts.append(mask.half().cpu())
        if keep_saliency and "saliency" in out:
            sal.append(out["saliency"].half().cpu())
    empty = torch.zeros((0,))
    return Predictions(
        torch.cat(probs) if probs else empty,
        torch.cat(mask_parts) if mask_parts else empty,
        torch.cat(sal) if sal else None,
        torch.cat(maps) if maps else None,
    )


# Images per network call on CPU: every image's outputs are its own in eval mode, so a batch
# can be split freely, and feature maps of a few 256 px images stay in cache between layers
# (4 ran 1.27x faster than 32 in bf16 and 1.26x in fp32: benchmarks/results/bf16_design.md).
CPU_CHUNK = 4


def forward_in_chunks(
    net: MultiMixNet, x: torch.Tensor, activation_maps: bool = False, segment: bool = True
) -> dict[str, torch.Tensor]:
    """``net(x)`` in chunks of ``CPU_CHUNK`` images on CPU (one call elsewhere), joined."""
    if x.device.type != "cpu" or x.shape[0] <= CPU_CHUNK:
        return net(x, activation_maps=activation_maps, segment=segment)
    parts = [net(c, activation_maps=activation_maps, segment=segment) for c in x.split(CPU_CHUNK)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
