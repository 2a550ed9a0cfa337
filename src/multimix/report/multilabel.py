"""Report parts of a multi-label run: captions with the findings present, and galleries of the
per-finding errors next to the map of the finding in error.

In a multi-label run an image is not right or wrong as a whole: each finding is. A false
positive is a finding predicted present (probability at or above its threshold) on an image
whose certain label says absent; a false negative the reverse. Each gallery entry is one
(image, finding) pair, and its explanation map is computed for that finding's own logit, so the
map shows what the network took for (or missed of) that very finding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from multimix.data.bank import Bank
from multimix.data.findings import NEGATIVE, POSITIVE
from multimix.engine.inference import Predictions
from multimix.report.html import Gallery

GALLERY_SIZE = 6

FindingHeatmaps = Callable[[Bank, torch.Tensor, torch.Tensor], np.ndarray]


def findings_text(probs: torch.Tensor, findings: list[str], thresholds: dict[str, float]) -> str:
    """``effusion 0.83, nodule 0.71`` (findings present, most probable first) or
    ``no finding (top: nodule 0.31)``."""
    order = torch.argsort(probs, descending=True, stable=True).tolist()
    present = [f for f in order if float(probs[f]) >= thresholds.get(findings[f], 0.5)]
    if not present:
        top = order[0]
        return f"no finding (top: {findings[top]} {float(probs[top]):.2f})"
    return ", ".join(f"{findings[f]} {float(probs[f]):.2f}" for f in present)


def finding_errors(
    bank: Bank,
    preds: Predictions,
    findings: list[str],
    thresholds: dict[str, float],
    n: int = GALLERY_SIZE,
) -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    """(heading, caption, rows, finding indices) of false positives (most confident first) and
    false negatives (lowest probability first), over (image, finding) pairs with certain
    labels. Nothing for a source without labels."""
    labeled = bank.labeled
    if not labeled.any() or not len(preds.probs):
        return []
    codes = bank.targets
    cut = torch.tensor([thresholds.get(f, 0.5) for f in findings])
    present = preds.probs >= cut[None, :]
    groups = [
        (
            "False positives",
            "Findings predicted present that the labels say are absent, most confident first.",
            (codes == NEGATIVE) & present,
            True,
        ),
        (
            "False negatives",
            "Findings the labels say are present that were predicted absent, lowest "
            "probability first.",
            (codes == POSITIVE) & ~present,
            False,
        ),
    ]
    out = []
    for heading, caption, chosen, descending in groups:
        rows, cols = torch.nonzero(chosen, as_tuple=True)
        scores = preds.probs[rows, cols]
        order = torch.argsort(scores, descending=descending, stable=True)[:n]
        out.append((heading, caption, rows[order], cols[order]))
    return out


def error_galleries(
    source: str,
    bank: Bank,
    preds: Predictions,
    findings: list[str],
    thresholds: dict[str, float],
    heatmaps: FindingHeatmaps | None,
    heatmap_name: str,
) -> list[Gallery]:
    """The false positive and false negative galleries, each entry with its finding's map."""
    from multimix.report.build import _gallery

    out = []
    for heading, what, rows, cols in finding_errors(bank, preds, findings, thresholds):
        titles = [
            f"{bank.records[r].name[:24]}  {findings[f]} {float(preds.probs[r, f]):.2f} "
            f"(threshold {thresholds.get(findings[f], 0.5):.2f})"
            for r, f in zip(rows.tolist(), cols.tolist(), strict=True)
        ]
        maps = heatmaps(bank, rows, cols) if heatmaps is not None and len(rows) else None
        caption = f"{what} Red: predicted lung mask; green: reference mask (where known)."
        if maps is not None:
            caption += f" Right of each image: its {heatmap_name} map for the finding named."
        extra = {"heatmaps": maps, "heatmap_name": heatmap_name, "caption": caption}
        out.append(_gallery(source, bank, preds, rows, titles, heading, **extra))
    return out


def heatmap_maker(
    run: Path, metrics: dict, method: str | None, device: str
) -> tuple[FindingHeatmaps, str]:
    """Maps of one finding per image (``method``, default saliency), from the run's model.

    The bridge's saliency kept with the predictions is of the top finding only, so it is not
    reused here: each error is explained for the finding in error.
    """
    from multimix.engine.evaluate import load_run
    from multimix.engine.runtime import select_device
    from multimix.explain.attributions import explain

    method = method or "saliency"
    dev = select_device(device)
    _, model = load_run(Path(run), metrics.get("checkpoint", "best"), dev)

    def computed(bank: Bank, rows: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        x = bank.float_images(rows).to(dev)
        maps = explain(model, x, method, target=targets.to(dev))
        return maps[:, 0].cpu().numpy()

    return computed, method


def finding_codes(bank: Bank, n_findings: int) -> np.ndarray | None:
    """(n, F) codes of the labeled images, in the order of the labeled probabilities."""
    labeled = bank.labeled
    return bank.targets[labeled].numpy() if labeled.any() else None
