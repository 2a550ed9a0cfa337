"""Classification metrics per source; ``None`` where a metric is undefined, never a crash."""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import compute_roc_auc


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of one-vs-rest scores, or None when only one class is present."""
    if positive.all() or not positive.any():
        return None
    value = float(compute_roc_auc(torch.from_numpy(scores), torch.from_numpy(positive.astype(int))))
    return None if math.isnan(value) else value


def ratio(num: float, den: float) -> float | None:
    """``num / den``, or None when ``den`` is 0 (an undefined precision or recall)."""
    return None if den == 0 else float(num / den)


def classification_metrics(
    probs: np.ndarray, targets: np.ndarray, classes: tuple[str, ...] | list[str]
) -> dict:
    """Accuracy, AUC (macro one-vs-rest over classes present), macro F1, per class, confusion."""
    n_classes = len(classes)
    pred = probs.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(confusion, (targets, pred), 1)
    per_class, f1s, aucs = {}, [], []
    for c, name in enumerate(classes):
        tp = confusion[c, c]
        precision = ratio(tp, confusion[:, c].sum())
        recall = ratio(tp, confusion[c, :].sum())
        f1 = ratio(2 * tp, confusion[:, c].sum() + confusion[c, :].sum())
        auc = roc_auc(probs[:, c], targets == c)
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "auc": auc,
            "support": int(confusion[c, :].sum()),
        }
        if confusion[c, :].sum() > 0 and f1 is not None:
            f1s.append(f1)
        if auc is not None:
            aucs.append(auc)
    if n_classes == 2:  # the usual binary AUC: score of the second (positive) class
        auc_value = per_class[classes[1]]["auc"]
    else:
        auc_value = float(np.mean(aucs)) if aucs else None
    return {
        "n": len(targets),
        "accuracy": float((pred == targets).mean()) if len(targets) else None,
        "auc": auc_value,
        "f1_macro": float(np.mean(f1s)) if f1s else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }
