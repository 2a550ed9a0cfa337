"""The saliency the bridge feeds the decoder: |d(top class score) / d image|.

Two ways to the same map. ``input_saliency`` asks autograd, which walks back through the whole
batch the scores came from. ``traced_saliency`` walks back by hand through a traced encoder pass,
only over the rows the decoder needs: in a training step those are the mask images (16 of the
40 images at the defaults). A training step asks for neither directly: ``bridge_trace`` before
the encoder pass and ``bridge_saliency`` after it choose between them, the same way for every
method.
"""

from __future__ import annotations

import torch

from multimix.models.backbones.base import EncoderTrace


def bridge_trace(traceable: bool, x: torch.Tensor) -> EncoderTrace | None:
    """What the coming encoder pass over ``x`` must keep for the bridge's saliency.

    A trace to walk back by hand when the encoder is ``traceable``; otherwise ``x`` is made to
    require its gradient, for autograd, and there is no trace.
    """
    if traceable:
        return EncoderTrace()
    x.requires_grad_(True)
    return None


def bridge_saliency(
    logits: torch.Tensor,
    feats: list[torch.Tensor],
    trace: EncoderTrace | None,
    x: torch.Tensor,
    rows: int,
) -> torch.Tensor:
    """The first ``rows`` images' saliency from the pass ``bridge_trace`` prepared."""
    if trace is not None:
        return traced_saliency(logits, feats, trace, rows, walk_dtype=feats[-1].dtype)
    return input_saliency(logits, x, rows=rows)


def input_saliency(logits: torch.Tensor, x: torch.Tensor, rows: int | None = None) -> torch.Tensor:
    """|d(top class score)/d input| for the first ``rows`` images, each scaled to max 1.

    Computed from the forward pass already done (no second encoder pass), and only w.r.t. the
    input, so no weight gradients are formed. Summing per-image top scores gives each image's own
    gradient exactly when the network normalises per image (or in eval mode); with batch norm in
    training mode the other images' contribution through the batch statistics is O(1/batch).
    """
    rows = logits.shape[0] if rows is None else rows
    score = logits[:rows].max(dim=1).values.sum()
    (grad,) = torch.autograd.grad(score, x, retain_graph=True)
    return _scaled_magnitude(grad[:rows])


def traced_saliency(
    logits: torch.Tensor,
    feats: list[torch.Tensor],
    trace: EncoderTrace,
    rows: int,
    walk_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The first ``rows`` images' saliency from a traced encoder pass (``encode(x, trace)``).

    Each image's own gradient with the batch statistics held fixed (what eval mode does with the
    running ones), so the other images never enter: autograd only goes from the scores to the
    last feature map (pooling, dropout, linear), and through the per-image normalisation of these
    rows, redone on them alone. The input itself needs no gradient, so the training backward
    never forms one for the first convolution.

    The walk runs in ``walk_dtype``; callers pass the dtype of the features, so under bf16
    (autocast in training, a bf16 copy in inference) its convolutions run on the matrix units
    too. The bf16 walk agrees with the fp32 walk of the same pass (correlation > 0.99:
    tests/models/test_fusion.py) and cut a bf16 training step's time by 14%. The input
    normalisation's backward and the scaling to max 1 are always fp32.
    """
    if trace.image is None or trace.normalize is None or not trace.layers:
        raise ValueError("traced_saliency needs the trace of the pass that made these logits")
    score = logits[:rows].max(dim=1).values.sum()
    (grad,) = torch.autograd.grad(score, feats[-1], retain_graph=True)
    with torch.no_grad():
        g = grad[:rows].to(walk_dtype)
        for layer in reversed(trace.layers):
            g = torch.ops.aten.threshold_backward(g, layer.out[:rows].to(g.dtype), 0)  # ReLU
            g = _conv_input_grad(layer.conv, layer.in_shape, g, layer.scale)
    image = trace.image[:rows].float().requires_grad_(True)  # the trace keeps it detached
    with torch.enable_grad():
        normalized = trace.normalize(image)
    (grad,) = torch.autograd.grad(normalized, image, g.to(normalized.dtype))
    return _scaled_magnitude(grad)


def _conv_input_grad(
    conv: torch.nn.Conv2d, in_shape: torch.Size, g: torch.Tensor, scale: torch.Tensor | None
) -> torch.Tensor:
    """d conv / d input applied to ``g`` times ``scale`` per output channel: the kernel autograd
    runs, without weight gradients. The scale goes into the weights, not over the whole map."""
    channels_last = g.is_contiguous(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (g.shape[0], *in_shape[1:])  # read for its shape and layout only
    like = torch.empty(shape, dtype=g.dtype, device=g.device, memory_format=fmt)
    weight = conv.weight.to(g.dtype)
    if scale is not None:
        weight = weight * scale.to(g.dtype).view(-1, 1, 1, 1)
    return torch.ops.aten.convolution_backward(
        g,
        like,
        weight,
        None,
        conv.stride,
        conv.padding,
        conv.dilation,
        False,
        [0, 0],
        conv.groups,
        (True, False, False),
    )[0]


def _scaled_magnitude(grad: torch.Tensor) -> torch.Tensor:
    """|grad|, max over channels, each image scaled to max 1 (a map, not a gradient)."""
    sal = grad.abs().amax(dim=1, keepdim=True)
    peak = sal.flatten(1).amax(dim=1).clamp_min(1e-12)
    return (sal / peak[:, None, None, None]).detach()
