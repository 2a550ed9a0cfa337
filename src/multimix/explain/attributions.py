"""Explanation maps for the classifier: where in the image did the predicted class come from?

Every explainer returns a float tensor ``(B, 1, H, W)`` with the input's spatial shape, values
``>= 0`` scaled to a maximum of 1 per image (an all-zero map stays zero), so maps of different
methods can be shown and compared on one scale. The algorithms are Captum's; this module only
chooses the classifier forward (``model.classify(model.encode(x))``), the target class, the
baseline and the post-processing.

The model is evaluated in eval mode (batch statistics of the running averages, no dropout); its
training flag, ``requires_grad`` flags and hooks are as before when an explainer returns, and no
weight gradients are accumulated.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from torch import nn

from multimix.core.errors import ConfigError
from multimix.models.saliency import input_saliency

__all__ = [
    "BASELINES",
    "EXPLAINERS",
    "baseline_image",
    "class_logits",
    "explain",
    "gaussian_blur",
    "gradcam",
    "integrated_gradients",
    "saliency",
    "scale_per_image",
]

BASELINES = ("black", "mean", "blur")
"""Reference images for integrated gradients (and fills for the deletion curve)."""

# "Strongly" blurred: sigma is this fraction of the shorter image side, so anatomy-scale
# structures (lung fields, opacities) are gone while the overall brightness layout stays.
_BLUR_SIGMA_FRACTION = 0.1


def class_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's forward alone: ``model.classify(model.encode(x))``."""
    return model.classify(model.encode(x))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode and give it back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def scale_per_image(attr: torch.Tensor) -> torch.Tensor:
    """Clamp at 0 and divide each image's map by its maximum; an all-zero map stays zero."""
    attr = torch.nan_to_num(attr.detach().float(), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0)
    peak = attr.flatten(1).amax(dim=1).clamp_min(torch.finfo(attr.dtype).tiny)
    return (attr / peak.view(-1, *([1] * (attr.dim() - 1)))).clamp_(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` images with replicate padding.

    ``sigma`` defaults to a tenth of the shorter side (a strong blur).
    """
    height, width = x.shape[-2:]
    if sigma is None:
        sigma = max(1.0, _BLUR_SIGMA_FRACTION * min(height, width))
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return out


def baseline_image(x: torch.Tensor, kind: str) -> torch.Tensor:
    """A reference image for ``x``: ``black`` (zeros), ``mean`` (per image) or ``blur``."""
    x = x.detach()
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        return gaussian_blur(x)
    raise ConfigError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")


def _targets(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """``target`` as a LongTensor ``(B,)``; ``None`` means each image's predicted class."""
    if target is None:
        with torch.no_grad():
            return class_logits(model, x).argmax(dim=1)
    target = torch.as_tensor(target, dtype=torch.long, device=x.device)
    if target.dim() == 0:
        target = target.expand(x.shape[0])
    if target.shape != (x.shape[0],):
        raise ValueError(f"target must be one class or one per image, got shape {target.shape}")
    return target


def _check_input(x: torch.Tensor) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"explanations need a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    # A fresh leaf: the caller's tensor never gets requires_grad or a .grad from us.
    return x.detach().clone().float()


def saliency(model: nn.Module, x: torch.Tensor, target=None) -> torch.Tensor:
    """|d(class score)/d input|: the map the saliency bridge feeds to the decoder.

    With ``target=None`` this is exactly the bridge's map (top class score); with a target, the
    same gradient of that class's score.
    """
    x = _check_input(x)
    with eval_mode(model), torch.enable_grad():
        chosen = None if target is None else _targets(model, x, target)
        x.requires_grad_(True)
        logits = class_logits(model, x)
        if chosen is not None:
            # input_saliency takes the max over classes: leave it only the chosen column.
            logits = logits.gather(1, chosen[:, None])
        sal = input_saliency(logits, x)
    return scale_per_image(sal)


def gradcam(
    model: nn.Module, x: torch.Tensor, target=None, layer: str = "encoder.levels.3"
) -> torch.Tensor:
    """Grad-CAM (Captum ``LayerGradCam``) on the encoder layer named ``layer``, ReLU'd and
    upsampled bilinearly to the input size."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise ConfigError(f"the model has no layer {layer!r} for Grad-CAM") from None
    x = _check_input(x)
    with eval_mode(model):
        chosen = _targets(model, x, target)
        cam = LayerGradCam(lambda inp: class_logits(model, inp), module)
        attr = cam.attribute(x, target=chosen, relu_attributions=True)
        attr = LayerAttribution.interpolate(attr.detach(), tuple(x.shape[-2:]), "bilinear")
    return scale_per_image(attr.amax(dim=1, keepdim=True))


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target=None,
    baseline: str = "blur",
    steps: int = 32,
    internal_batch_size: int = 32,
) -> torch.Tensor:
    """|Integrated gradients| (Captum) from a ``black``, ``mean`` or ``blur`` baseline.

    ``internal_batch_size`` bounds how many interpolated images go through the network at once.
    """
    if steps < 1:
        raise ConfigError("integrated gradients need at least 1 step")
    x = _check_input(x)
    base = baseline_image(x, baseline)
    with eval_mode(model):
        chosen = _targets(model, x, target)
        ig = IntegratedGradients(lambda inp: class_logits(model, inp))
        attr = ig.attribute(
            x,
            baselines=base,
            target=chosen,
            n_steps=steps,
            internal_batch_size=max(1, internal_batch_size),
        )
    return scale_per_image(attr.detach().abs().amax(dim=1, keepdim=True))


Explainer = Callable[..., torch.Tensor]

EXPLAINERS: dict[str, Explainer] = {
    "saliency": saliency,
    "gradcam": gradcam,
    "ig": integrated_gradients,
}


def explain(model: nn.Module, x: torch.Tensor, method: str, **kw) -> torch.Tensor:
    """The map of ``method`` (a key of :data:`EXPLAINERS`) for the batch ``x``."""
    try:
        fn = EXPLAINERS[method]
    except KeyError:
        raise ConfigError(
            f"unknown explanation method {method!r}; choose from {', '.join(EXPLAINERS)}"
        ) from None
    return fn(model, x, **kw)
