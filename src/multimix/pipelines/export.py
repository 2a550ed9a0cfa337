"""``multimix export RUN --format onnx``: the classifier and the segmentation in one ONNX file.

The network's forward needs a gradient: the saliency bridge feeds the decoder
|d(top class score) / d image|, which torch gets from autograd and ONNX has no op for. For a
*traceable* backbone (a plain chain of conv -> batch norm -> ReLU, the default ``unet`` with
batch or no norm; see :mod:`multimix.models.saliency`) that gradient is a fixed graph of forward
ops: the classifier's weight row of the top class spread over the last feature map, then per
layer in reverse a ReLU mask and a transposed convolution with the layer's weights, then the
derivative of the per-image standardisation. :class:`InferenceGraph` writes it so, batch norm
folded in first, and the ONNX file computes the bridge's saliency itself. A backbone that is not
traceable (``resnet``: residual sums) cannot be walked back this way; a model with a bridge on
such a backbone is refused with that reason, a model without a bridge exports as is.

The file is checked at once: onnxruntime runs it on a fixed batch and its outputs are compared
with torch's; the largest absolute difference per output is printed and must stay within
:data:`TOLERANCE`.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from multimix.core.errors import ConfigError, DataError

__all__ = ["TOLERANCE", "ExportReport", "InferenceGraph", "export_onnx", "parity"]

TOLERANCE = {"logits": 1e-3, "mask_probs": 1e-3, "saliency": 1e-2, "activation_maps": 1e-3}
"""Largest absolute difference allowed between onnxruntime and torch, per output (class
logits; mask probabilities after the sigmoid; the bridge's saliency, scaled to max 1 per image;
the localization head's maps). The saliency's is wider: the reference is the unfolded network's
autograd gradient, and a ReLU whose input is within rounding of 0 may pass the gradient in one
and not the other (measured: 3.1e-3 on a 128 px run, while its mask probabilities, which that
saliency feeds, stayed within 6.3e-5)."""

OPSET = 18


class InferenceGraph(nn.Module):
    """The network's inference forward with the bridge's saliency written as forward ops.

    Same outputs as ``MultiMixNet.forward`` in eval mode: ``logits``, ``mask_logits``,
    ``saliency`` (with a bridge) and ``activation_maps`` (with a localization head).
    """

    def __init__(self, model: nn.Module) -> None:
        from multimix.models.fusion import folded_for_inference

        super().__init__()
        self.net = folded_for_inference(model)
        self.bridge = self.net.bridge is not None
        self.maps = self.net.localizer is not None
        if self.bridge and not self.net.traceable:
            raise ConfigError(
                f"the {self.net.cfg.backbone!r} backbone is not traceable, so the saliency its "
                "bridge feeds the decoder (a gradient) cannot be written as ONNX ops; export "
                "needs a traceable backbone (unet with batch or no norm) or a run without the "
                "bridge"
            )
        parts = list(self.net.classifier)
        if not (
            len(parts) == 4
            and isinstance(parts[0], nn.AdaptiveAvgPool2d)
            and isinstance(parts[-1], nn.Linear)
        ):
            raise ConfigError("export knows the classifier pool -> flatten -> dropout -> linear")
        self.linear = parts[-1]

    @property
    def output_names(self) -> list[str]:
        names = ["logits", "mask_logits"]
        if self.bridge:
            names.append("saliency")
        if self.maps:
            names.append("activation_maps")
        return names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from multimix.models.backbones import EncoderTrace

        net = self.net
        if not self.bridge:
            feats = net.encode(x)
            out = [net.classify(feats), net.segment(feats)]
            if self.maps:
                out.append(net.activation_maps(feats))
            return tuple(out)
        trace = EncoderTrace()
        feats = net.encode(x, trace)
        logits = net.classify(feats)
        sal = self.saliency(x, logits, feats[-1], trace)
        out = [logits, net.segment(feats, x, sal), sal]
        if self.maps:
            out.append(net.activation_maps(feats))
        return tuple(out)

    def saliency(self, x, logits, last, trace) -> torch.Tensor:
        """|d(top class score) / d x| scaled to max 1 per image, by the chain rule by hand."""
        top = logits.argmax(dim=1)
        pixels = last.shape[-2] * last.shape[-1]
        g = (self.linear.weight[top] / pixels)[:, :, None, None].expand_as(last)
        for layer in reversed(trace.layers):
            g = g * (layer.out > 0).to(g.dtype)  # ReLU
            conv = layer.conv
            weight = conv.weight
            if layer.scale is not None:
                weight = weight * layer.scale.view(-1, 1, 1, 1).to(weight.dtype)
            g = F.conv_transpose2d(
                g, weight, None, conv.stride, conv.padding,
                _output_padding(conv, layer.in_shape, g.shape), conv.groups, conv.dilation,
            )  # fmt: skip
        return _scaled(_standardize_backward(x, g))


def _output_padding(conv: nn.Conv2d, in_shape, out_shape) -> tuple[int, int]:
    """What a transposed convolution must add to give back the conv's input size."""
    pads = []
    for d in range(2):
        size = (
            (out_shape[2 + d] - 1) * conv.stride[d]
            - 2 * conv.padding[d]
            + conv.dilation[d] * (conv.kernel_size[d] - 1)
            + 1
        )
        pads.append(int(in_shape[2 + d]) - int(size))
    return pads[0], pads[1]


def _standardize_backward(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """d/dx of ``MultiMixNet.normalize`` (y = c / (s + eps), c = x - mean, s = |c| / k)
    applied to ``g``: g / (s + eps) - c <g, c> / ((s + eps)^2 s k^2), minus its mean."""
    pixels = x.shape[-2] * x.shape[-1]
    k = math.sqrt(max(pixels - 1, 1))
    c = x - x.mean(dim=(-2, -1), keepdim=True)
    s = torch.linalg.vector_norm(c, dim=(-2, -1), keepdim=True) / k
    d = s + 1e-3
    dot = (g * c).sum(dim=(-2, -1), keepdim=True)
    gc = g / d - c * dot / (d * d * s.clamp_min(1e-12) * (k * k))
    return gc - gc.mean(dim=(-2, -1), keepdim=True)


def _scaled(grad: torch.Tensor) -> torch.Tensor:
    sal = grad.abs().amax(dim=1, keepdim=True)
    peak = sal.flatten(1).amax(dim=1).clamp_min(1e-12)
    return sal / peak[:, None, None, None]


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and how closely onnxruntime matched torch."""

    path: Path
    outputs: list[str]
    saliency_in_graph: bool
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    images: int = 0

    @property
    def ok(self) -> bool:
        return all(v <= TOLERANCE[k] for k, v in self.max_abs_diff.items())


def check_batch(size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """A fixed batch for the parity check: smooth gradients plus noise, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, size)[:, None].expand(size, size)
    xs = torch.linspace(0, 1, size)[None, :].expand(size, size)
    images = []
    for i in range(n):
        smooth = 0.5 + 0.4 * torch.sin(6.0 * (xs * (i + 1) / n) + 3.0 * ys)
        noise = 0.15 * torch.rand(size, size, generator=gen)
        images.append((smooth + noise).clamp(0, 1))
    return torch.stack(images)[:, None].float()


def torch_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """The reference: the network's own forward in eval mode (autograd saliency)."""
    model.eval()
    out = model(x)
    ref = {
        "logits": out["logits"],
        "mask_probs": torch.sigmoid(out["mask_logits"].float()),
    }
    if "saliency" in out:
        ref["saliency"] = out["saliency"]
    if "activation_maps" in out:
        ref["activation_maps"] = out["activation_maps"]
    return {k: v.detach().float().cpu().numpy() for k, v in ref.items()}


def onnx_outputs(session, x: torch.Tensor) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {"image": x.numpy()}), strict=True))
    out = {
        "logits": values["logits"],
        "mask_probs": 1.0 / (1.0 + np.exp(-values["mask_logits"].astype(np.float64))),
    }
    for key in ("saliency", "activation_maps"):
        if key in values:
            out[key] = values[key]
    return out


def parity(model: nn.Module, session, x: torch.Tensor) -> dict[str, float]:
    """Largest absolute difference per output between torch and onnxruntime on ``x``."""
    ref, got = torch_outputs(model, x), onnx_outputs(session, x)
    return {k: float(np.abs(ref[k] - got[k]).max()) for k in ref}


def export_onnx(
    run: Path, out: Path, checkpoint: str = "best", check_images: int = 4
) -> ExportReport:
    """Write the run's network to ``out`` as ONNX (input ``image``: (batch, 1, S, S) floats in
    [0, 1]; a dynamic batch) and check it against torch with onnxruntime.

    Raises:
        ConfigError: a model ONNX cannot express (see the module docstring).
        DataError: ``out`` cannot be written.
    """
    import onnx
    import onnxruntime as ort

    from multimix.core.atomic import atomic_write
    from multimix.engine.evaluate import load_run

    cfg, model = load_run(Path(run), checkpoint)
    model.eval()
    graph = InferenceGraph(model).eval()
    size = int(cfg.image_size)
    example = check_batch(size, 2)
    batch = torch.export.Dim("batch", min=1, max=1024)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # torchvision ops it skips: nothing the user can act on
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                (example,),
                input_names=["image"],
                output_names=graph.output_names,
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    meta = {
        "multimix_run": Path(run).name,
        "checkpoint": checkpoint,
        "task": cfg.task,
        "classes": json.dumps(list(cfg.classes)),
        "structures": json.dumps(list(cfg.structures)),
        "image_size": str(size),
        "saliency": "in graph" if graph.bridge else "no bridge",
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise DataError(out, "the folder to write the ONNX file into does not exist")
    data = proto.SerializeToString()
    atomic_write(out, lambda fh: fh.write(data))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    x = check_batch(size, check_images, seed=1)
    diffs = parity(model, session, x)
    return ExportReport(out, graph.output_names, graph.bridge, diffs, check_images)
