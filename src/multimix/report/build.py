"""Turn an evaluation (metrics plus the predictions behind them) into the HTML report."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from multimix.data.bank import Bank
from multimix.engine.inference import Predictions
from multimix.engine.logger import CsvLog
from multimix.explain.report_metrics import lung_index
from multimix.metrics.segmentation import per_image_dice
from multimix.report.html import Gallery, SourceScores, write_report

GALLERY_SIZE = 6  # images per best / worst / false-positive / false-negative gallery

Heatmaps = Callable[[Bank, Predictions, torch.Tensor], np.ndarray]


def _title(
    bank: Bank,
    preds: Predictions,
    classes: list[str],
    i: int,
    extra: str = "",
    thresholds: dict[str, float] | None = None,
) -> str:
    """Image name and predicted class (multi-label: the findings present at ``thresholds``)."""
    if preds.multilabel:
        from multimix.report.multilabel import findings_text

        found = findings_text(preds.probs[i], classes, thresholds or {})
        text = f"{bank.records[i].name[:24]}  {found}"
        return f"{text}  {extra}" if extra else text
    top = int(preds.probs[i].argmax())
    text = f"{bank.records[i].name[:24]}  {classes[top]} {float(preds.probs[i, top]):.2f}"
    return f"{text}  {extra}" if extra else text


def _lung_dice(bank: Bank, preds: Predictions) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with a lung mask and the lung Dice of each."""
    lung = lung_index(bank.structures)
    if lung is None or not bank.known[:, lung].any():
        return torch.zeros(0, dtype=torch.long), torch.zeros(0)
    rows = torch.nonzero(bank.known[:, lung]).flatten()
    pred = preds.masks[rows, lung : lung + 1] >= 0.5
    dice = per_image_dice(pred, bank.masks[rows, lung : lung + 1].bool()).flatten()
    return rows, dice


def _gallery(
    source: str,
    bank: Bank,
    preds: Predictions,
    rows: torch.Tensor,
    titles: list[str],
    heading: str,
    **extra,
) -> Gallery:
    lung = lung_index(bank.structures)
    has_true = lung is not None and bool(bank.known[rows, lung].any())
    pred = preds.masks[rows, lung] >= 0.5 if lung is not None else None
    return Gallery(
        source=source,
        images=bank.images[rows, 0].numpy(),
        pred_masks=pred.numpy() if pred is not None else None,
        true_masks=bank.masks[rows, lung].numpy().astype(bool) if has_true else None,
        titles=titles,
        heading=heading,
        **extra,
    )


def gallery(
    source: str,
    bank: Bank,
    preds: Predictions,
    classes: list[str],
    n: int = 12,
    thresholds: dict[str, float] | None = None,
) -> Gallery:
    """Up to ``n`` examples: with masks, the worst and best by Dice; else evenly spread.

    ``thresholds`` (multi-label runs) decide which findings the captions call present."""
    rows, dice = _lung_dice(bank, preds)
    if len(rows):
        order = rows[torch.argsort(dice)]
        pick = torch.cat([order[: n // 2], order[-(n - n // 2) :]]).unique(sorted=False)
        dice_of = dict(zip(rows.tolist(), dice.tolist(), strict=True))
    else:
        pick = torch.linspace(0, len(bank) - 1, min(n, len(bank))).round().long().unique()
        dice_of = {}
    titles = [
        _title(
            bank, preds, classes, i, f"dice {dice_of[i]:.2f}" if i in dice_of else "", thresholds
        )
        for i in pick.tolist()
    ]
    return _gallery(source, bank, preds, pick, titles, "Examples")


def segmentation_galleries(
    source: str,
    bank: Bank,
    preds: Predictions,
    classes: list[str],
    n: int = GALLERY_SIZE,
    thresholds: dict[str, float] | None = None,
) -> list[Gallery]:
    """The worst and the best segmentations by lung Dice (no image in both); [] without masks."""
    rows, dice = _lung_dice(bank, preds)
    if not len(rows):
        return []
    order = torch.argsort(dice)
    n_worst = min(n, math.ceil(len(order) / 2))
    worst, best = order[:n_worst], order[n_worst:].flip(0)[:n]
    out = []
    for heading, picked in (("Worst segmentations", worst), ("Best segmentations", best)):
        if len(picked):
            titles = [
                _title(bank, preds, classes, int(rows[k]), f"dice {float(dice[k]):.2f}", thresholds)
                for k in picked.tolist()
            ]
            out.append(_gallery(source, bank, preds, rows[picked], titles, heading))
    return out


def error_rows(
    bank: Bank, preds: Predictions, classes: list[str], n: int = GALLERY_SIZE
) -> list[tuple[str, str, torch.Tensor]]:
    """(heading, caption, rows) of the errors, most confident first: false positives and false
    negatives (positive = ``classes[1]``) for two classes, else the misclassified images.
    Nothing for a source without labels."""
    labels = bank.targets
    labeled = bank.labeled
    if not labeled.any() or not len(preds.probs):
        return []
    confidence, pred = preds.probs.max(dim=1)
    if len(classes) == 2:
        neg, pos = classes
        is_neg, is_pos = labeled & (labels == 0), labeled & (labels == 1)
        groups = [
            ("False positives", f"{neg} images predicted {pos}", is_neg & (pred == 1)),
            ("False negatives", f"{pos} images predicted {neg}", is_pos & (pred == 0)),
        ]
    else:
        groups = [("Misclassified", "images predicted the wrong class", labeled & (pred != labels))]
    out = []
    for heading, what, chosen in groups:
        rows = torch.nonzero(chosen).flatten()
        rows = rows[torch.argsort(confidence[rows], descending=True, stable=True)][:n]
        out.append((heading, f"{what.capitalize()}, most confident first.", rows))
    return out


def error_galleries(
    source: str,
    bank: Bank,
    preds: Predictions,
    classes: list[str],
    heatmaps: Heatmaps | None,
    heatmap_name: str,
) -> list[Gallery]:
    """False positive / false negative (or misclassified) galleries with explanation maps."""
    out = []
    for heading, what, rows in error_rows(bank, preds, classes):
        titles = [
            _title(bank, preds, classes, i, f"(true {classes[int(bank.targets[i])]})")
            for i in rows.tolist()
        ]
        maps = heatmaps(bank, preds, rows) if heatmaps is not None and len(rows) else None
        caption = f"{what} Red: predicted lung mask; green: reference mask (where known)."
        if maps is not None:
            caption += f" Right of each image: its {heatmap_name} map for the predicted class."
        out.append(
            _gallery(
                source,
                bank,
                preds,
                rows,
                titles,
                heading,
                heatmaps=maps,
                heatmap_name=heatmap_name,
                caption=caption,
            )
        )
    return out


def source_scores(source: str, bank: Bank, preds: Predictions) -> SourceScores:
    labeled = bank.labeled
    _, dice = _lung_dice(bank, preds)
    codes = None
    if preds.multilabel:  # one ROC per finding, from the codes
        from multimix.report.multilabel import finding_codes

        codes = finding_codes(bank, preds.probs.shape[1])
    return SourceScores(
        source=source,
        probs=preds.probs[labeled].numpy() if labeled.any() else None,
        labels=bank.targets[labeled].numpy() if labeled.any() and codes is None else None,
        dice=dice.numpy() if len(dice) else None,
        codes=codes,
    )


def _first_explain_method(metrics: dict) -> str | None:
    for block in metrics.get("sources", {}).values():
        for method in block.get("explanations") or {}:
            return method
    return None


def _heatmap_maker(
    run: Path, metrics: dict, kept: dict, method: str | None, device: str
) -> tuple[Heatmaps, str]:
    """Maps for the error galleries: ``method`` if given; else the saliency the model returned
    with its predictions (bridge models); else plain saliency computed here."""
    if method is None and all(preds.saliency is not None for _, preds in kept.values()):

        def from_predictions(bank: Bank, preds: Predictions, rows: torch.Tensor) -> np.ndarray:
            return preds.saliency[rows, 0].float().numpy()

        return from_predictions, "saliency"

    from multimix.engine.evaluate import load_run
    from multimix.engine.runtime import select_device
    from multimix.explain.attributions import explain

    method = method or "saliency"
    dev = select_device(device)
    _, model = load_run(run, metrics.get("checkpoint", "best"), dev)

    def computed(bank: Bank, preds: Predictions, rows: torch.Tensor) -> np.ndarray:
        maps = explain(model, bank.float_images(rows).to(dev), method)
        return maps[:, 0].cpu().numpy()

    return computed, method


def _skipped_notes(run: Path, evaluated: list[dict], shown: int = 10) -> list[str]:
    """One note per stage that left bad inputs out (``--on-bad-input skip``), naming them."""
    from multimix.data.bad_inputs import SKIPPED_CSV, read_skipped

    notes = []
    stages = (
        ("Training", read_skipped(run), f" (all in {run / SKIPPED_CSV})"),
        ("This evaluation", [(s["file"], s["reason"]) for s in evaluated], ""),
    )
    for stage, rows, where in stages:
        if rows:
            listed = "; ".join(f"{file}: {reason}" for file, reason in rows[:shown])
            more = f"; ... {len(rows) - shown} more" if len(rows) > shown else ""
            notes.append(f"{stage} left out {len(rows)} bad input(s){where}: {listed}{more}")
    return notes


def build_report(
    out_dir: Path,
    run: Path,
    metrics: dict,
    kept: dict[str, tuple[Bank, Predictions]],
    explain_method: str | None = None,
    device: str = "cpu",
) -> Path:
    """The report for ``evaluate_run(..., keep=True)``'s metrics and kept predictions.

    The false positive / negative galleries show ``explain_method``'s maps (default: the first
    method measured in ``metrics``; else the saliency the model returned).
    """
    classes = list(metrics["classes"])
    method = explain_method or _first_explain_method(metrics)
    multilabel = any(preds.multilabel for _, preds in kept.values())
    thresholds, ml_notes = None, []
    if multilabel:  # per-finding errors, each explained for its own finding
        from multimix.engine.predict_multilabel import read_thresholds
        from multimix.report import multilabel as ml_report

        thresholds, note = read_thresholds(Path(run), classes)
        ml_notes = [note] if note else []
    heatmaps, heatmap_name = (None, "")
    if any(bank.labeled.any() for bank, _ in kept.values()):
        if multilabel:
            heatmaps, heatmap_name = ml_report.heatmap_maker(Path(run), metrics, method, device)
        else:
            heatmaps, heatmap_name = _heatmap_maker(Path(run), metrics, kept, method, device)
    galleries, scores = [], []
    for name, (bank, preds) in kept.items():
        seg = segmentation_galleries(name, bank, preds, classes, thresholds=thresholds)
        galleries += seg or [gallery(name, bank, preds, classes, thresholds=thresholds)]
        if preds.multilabel:
            galleries += ml_report.error_galleries(
                name, bank, preds, classes, thresholds, heatmaps, heatmap_name
            )
        else:
            galleries += error_galleries(name, bank, preds, classes, heatmaps, heatmap_name)
        scores.append(source_scores(name, bank, preds))
    notes = [
        f"Run: {run}; checkpoint: {metrics['checkpoint']}.",
        "Sources used in training are scored on their held-out test part only (patient-grouped "
        "split saved in the run); other sources are scored in full (cross-domain).",
        "HD95 is in pixels at the run's image size; it is n/a where prediction or truth is empty.",
    ]
    if multilabel:
        notes.append(
            "Multi-label run: the summary's AUC and F1 are the mean AUC and macro F1 over "
            "findings; captions list the findings at or above their thresholds."
        )
    notes += ml_notes
    notes += _skipped_notes(Path(run), metrics.get("skipped") or [])
    return write_report(
        out_dir,
        "multimix evaluation",
        metrics,
        CsvLog(Path(run) / "train_log.csv").read(),
        CsvLog(Path(run) / "val_log.csv").read(),
        classes,
        galleries,
        notes,
        scores,
    )
