"""Calibration: do the predicted probabilities mean what they say?"""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import calibration_binning


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = 10) -> dict:
    """Top-label expected calibration error over ``bins`` equal-width confidence bins.

    The confidence of an image is its highest class probability; it is correct when that class is
    the true one. ECE is the count-weighted mean of |accuracy - mean confidence| over the bins.
    Bins are (left, right]: a confidence on an edge counts in the lower bin (MONAI's binning).
    Returns ``ece`` (None without images) and per bin its mean ``confidence``, ``accuracy``
    (None for an empty bin) and ``count``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if len(targets) == 0:
        return {
            "ece": None,
            "confidence": [None] * bins,
            "accuracy": [None] * bins,
            "count": [0] * bins,
        }
    confidence = torch.from_numpy(probs.max(axis=1)).float().view(1, 1, -1)
    correct = torch.from_numpy(probs.argmax(axis=1) == targets).float().view(1, 1, -1)
    mean_conf, mean_acc, counts = (
        t[0, 0].double() for t in calibration_binning(confidence, correct, bins)
    )
    filled = counts > 0
    gaps = (mean_acc[filled] - mean_conf[filled]).abs()
    ece = float((counts[filled] * gaps).sum() / counts.sum())

    def listed(values: torch.Tensor) -> list[float | None]:
        return [float(v) if ok else None for v, ok in zip(values, filled, strict=True)]

    return {
        "ece": ece,
        "confidence": listed(mean_conf),
        "accuracy": listed(mean_acc),
        "count": [int(c) for c in counts],
    }


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (Guo et al. 2017).

    One scalar: it rescales confidence without changing any prediction's argmax.
    """
    return fit_calibration(logits, targets, with_bias=False)[0]


def fit_calibration(
    logits: torch.Tensor, targets: torch.Tensor, with_bias: bool = True
) -> tuple[float, list[float]]:
    """Temperature T and class biases b minimising the NLL of softmax(logits / T + b).

    Bias-corrected temperature scaling (Alexandari et al. 2020): the temperature fixes the
    over-confidence, the biases the operating point. A checkpoint chosen by AUC can rank the
    validation images almost perfectly and still call most normals pneumonia; the biases move
    the decision to where the validation labels put it. The first class's bias is held at 0
    (softmax is unchanged by a common shift). Fitted on held-out validation images with LBFGS
    over log T; (1.0, zeros) when there is nothing to fit on.
    """
    n_classes = logits.shape[1] if logits.ndim == 2 else 1
    identity = (1.0, [0.0] * n_classes)
    if len(targets) < 2:
        return identity
    logits, targets = logits.detach().double(), targets.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    rest = torch.zeros(n_classes - 1, dtype=torch.float64, requires_grad=with_bias)
    params = [log_t, rest] if with_bias else [log_t]
    opt = torch.optim.LBFGS(params, lr=0.1, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        bias = torch.cat([torch.zeros(1, dtype=torch.float64), rest])
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp() + bias, targets)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp().clamp(0.05, 20.0))
    bias = [0.0, *(float(b) for b in rest.detach())]
    if not (np.isfinite(t) and np.isfinite(bias).all()):
        return identity
    return t, bias
