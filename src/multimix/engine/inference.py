"""Batched inference over a bank: class probabilities and mask probabilities."""

from __future__ import annotations

import torch

from multimix.engine.precision import precision_context, precision_dtype, resolve_precision
from multimix.models.inference import Predictions, run_model
from multimix.models.net import MultiMixNet
from multimix.tasks.base import Task, task_for_model

__all__ = ["Predictions", "predict"]


def predict(
    model: MultiMixNet,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 32,
    keep_saliency: bool = False,
    task: Task | None = None,
    precision: str = "fp32",  # auto, fp32 or bf16 (engine.precision): the network call only
    masks: bool = True,  # False: class outputs only, no decoder (see run_model)
    flip_masks: bool = False,  # masks averaged with the mirrored image's (see run_model)
) -> Predictions:
    """Run the model in eval mode over uint8 (N, 1, S, S) images in batches; the task (the
    model's own by default) turns logits into probabilities (in fp32) and says whether it wants
    the activation maps (see :func:`multimix.models.inference.run_model`)."""
    task = task or task_for_model(model)
    chosen = resolve_precision(precision, device)
    return run_model(
        model, images, device, task.probabilities, batch_size, keep_saliency,
        keep_maps=task.keeps_activation_maps(model),
        context=lambda: precision_context(chosen, device),
        dtype=precision_dtype(chosen), masks=masks, flip_masks=flip_masks,
    )  # fmt: skip
