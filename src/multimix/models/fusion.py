"""The network as inference runs it: batch norm folded, conv + ReLU fused, in the run's dtype.

Two steps, each exact in eval mode:

- ``folded_for_inference``: every conv -> batch norm pair becomes one convolution (batch norm
  with its running statistics is a per-channel scale and shift). The ONNX export stops here.
- ``inference_network``: also every conv -> ReLU becomes one oneDNN call with ReLU as a post-op
  (``ConvReLU``), the decoder's upsampling takes its bias inside the transposed convolution, and
  the whole copy is cast to the dtype inference runs in (bf16 weights and activations from end
  to end, so no cast passes between layers). On CPU a separate ReLU is a full pass over every
  feature map: in bf16, where the convolutions themselves run on the matrix units, those passes
  were 18% of the inference self time (measured: benchmarks/results/bf16_design.md).
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

from multimix.models.backbones import fold_sequentials
from multimix.models.decoder import UpConv
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


def _onednn_fuses(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and not (torch.is_grad_enabled() and x.requires_grad)
        and (x.dtype != torch.bfloat16 or onednn_runs_bf16())
    )


@functools.cache
def onednn_runs_bf16() -> bool:
    """Whether torch's oneDNN kernels (the fused convolution, ``mkldnn_linear``) take bf16 on
    this CPU.

    They refuse without ``avx512bw``/``avx512vl``/``avx512dq`` or ``avx_ne_convert`` (an
    AVX2-only EPYC, for one), one check for all of them, where torch's plain bf16 convolution
    still runs: bf16 inference there takes the unfused path instead of failing in its first
    forward, and the calibration leaves out the oneDNN peak.
    """
    x = torch.ones(1, 1, 4, 4, dtype=torch.bfloat16)
    w = torch.ones(1, 1, 3, 3, dtype=torch.bfloat16)
    try:
        torch.ops.mkldnn._convolution_pointwise(
            x, w, None, [1, 1], [1, 1], [1, 1], 1, "relu", [None], ""
        )
    except RuntimeError:
        return False
    return True


class ConvReLU(nn.Conv2d):
    """``relu(conv(x))`` as one oneDNN primitive on CPU (ReLU as its post-op), else as two.

    A subclass of ``nn.Conv2d`` with the same parameters, so the traced saliency walk reads its
    weight and geometry as it reads any convolution's; the fused kernel has no autograd, so it
    is only taken where no gradient flows through it (inference: the saliency is walked back by
    hand, ``models.saliency.traced_saliency``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros" and _onednn_fuses(x):
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight.to(x.dtype), bias, list(self.padding), list(self.stride),
                list(self.dilation), self.groups, "relu", [None], "",
            )  # fmt: skip
        return F.relu(super().forward(x))


class UpConvInference(nn.ConvTranspose2d):
    """``UpConv`` with the bias inside the transposed convolution (its training reason, a slow
    bias gradient, does not apply without gradients): one pass less over each upsampled map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv_transpose2d(x, self.weight.to(x.dtype), bias, self.stride)


def _retyped(module: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """``module`` as an instance of ``cls`` with the same parameters and settings (no copy)."""
    new = cls.__new__(cls)
    new.__dict__ = module.__dict__.copy()
    return new


def fuse_conv_relu(module: nn.Module) -> None:
    """In every ``nn.Sequential``, a conv followed by a ReLU (a folded norm, ``nn.Identity``,
    may sit between) becomes a ``ConvReLU``; the ReLU becomes ``nn.Identity``, so indices (and a
    traced walk over conv, norm, ReLU triples) stay as they were."""
    for seq in list(module.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv = seq[i]
            if type(conv) is not nn.Conv2d:
                continue
            j = i + 1 if not isinstance(seq[i + 1], nn.Identity) else i + 2
            if j < len(seq) and isinstance(seq[j], nn.ReLU):
                seq[i] = _retyped(conv, ConvReLU)
                seq[j] = nn.Identity()


def inference_network(model: MultiMixNet, dtype: torch.dtype = torch.float32) -> MultiMixNet:
    """``folded_for_inference``, then conv + ReLU fused and the copy cast to ``dtype``.

    Exact up to the dtype's rounding: fp32 gives the same outputs as the model in eval mode.
    A backbone that is not foldable keeps its norms, and then no conv of it is directly
    followed by its ReLU, so nothing of it is fused.
    """
    net = folded_for_inference(model)
    for name, part in net.named_children():
        if name != "encoder" or net.foldable:
            fuse_conv_relu(part)
    for parent in list(net.modules()):
        for key, child in parent.named_children():
            if isinstance(child, UpConv):
                setattr(parent, key, _retyped(child, UpConvInference))
    return net.to(dtype=dtype)
