"""Per-finding metrics: per-finding AUC and thresholded precision/recall/F1, and the
per-finding thresholds chosen on validation.

Only certain labels are scored: an uncertain or unmentioned finding says nothing about whether
the prediction was right.
"""

from __future__ import annotations

import numpy as np

from multimix.data.findings import NEGATIVE, POSITIVE
from multimix.metrics.classification import ratio, roc_auc

DEFAULT_THRESHOLD = 0.5


def _certain(codes: np.ndarray) -> np.ndarray:
    return (codes == POSITIVE) | (codes == NEGATIVE)


def best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The score threshold with the highest F1 (midway between neighbouring scores)."""
    if not positive.any() or positive.all():
        return DEFAULT_THRESHOLD
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], positive[order]
    tp = np.cumsum(p)
    fp = np.cumsum(~p)
    f1 = 2 * tp / (tp + fp + p.sum())
    last = np.r_[s[1:] != s[:-1], True]  # only cut between distinct scores
    k = int(np.argmax(np.where(last, f1, -1.0)))
    below = s[k + 1] if k + 1 < len(s) else 0.0
    return float((s[k] + below) / 2)


def choose_thresholds(
    probs: np.ndarray, codes: np.ndarray, findings: tuple[str, ...] | list[str]
) -> dict[str, float]:
    """Per-finding F1-maximising thresholds on certain labels (0.5 where undefined)."""
    out = {}
    for f, name in enumerate(findings):
        keep = _certain(codes[:, f])
        out[name] = best_f1_threshold(probs[keep, f], codes[keep, f] == POSITIVE)
    return out


def finding_metrics(
    probs: np.ndarray,
    codes: np.ndarray,
    findings: tuple[str, ...] | list[str],
    thresholds: dict[str, float] | None = None,
) -> dict:
    """``{"n", "mean_auc", "f1_macro", "per_finding": {name: {...}}}``; None where undefined."""
    thresholds = thresholds or {}
    per, aucs, f1s = {}, [], []
    for f, name in enumerate(findings):
        keep = _certain(codes[:, f])
        scores, positive = probs[keep, f], codes[keep, f] == POSITIVE
        t = float(thresholds.get(name, DEFAULT_THRESHOLD))
        pred = scores >= t
        tp = int((pred & positive).sum())
        auc = roc_auc(scores, positive)
        f1 = ratio(2 * tp, int(pred.sum()) + int(positive.sum()))
        per[name] = {
            "auc": auc,
            "threshold": t,
            "precision": ratio(tp, int(pred.sum())),
            "recall": ratio(tp, int(positive.sum())),
            "f1": f1,
            "support": int(positive.sum()),
            "n": int(keep.sum()),
        }
        if auc is not None:
            aucs.append(auc)
        if f1 is not None and positive.any():
            f1s.append(f1)
    return {
        "n": len(probs),
        "mean_auc": float(np.mean(aucs)) if aucs else None,
        "f1_macro": float(np.mean(f1s)) if f1s else None,
        "per_finding": per,
    }
