"""Turn an evaluation (metrics plus the predictions behind them) into the HTML report."""

from __future__ import annotations

from pathlib import Path

import torch

from multimix.data.bank import Bank
from multimix.engine.inference import Predictions
from multimix.engine.logger import CsvLog
from multimix.metrics.segmentation import per_image_dice
from multimix.report.html import Gallery, write_report


def gallery(
    source: str, bank: Bank, preds: Predictions, classes: list[str], n: int = 12
) -> Gallery:
    """Up to ``n`` examples: with masks, the worst and best by Dice; else evenly spread."""
    pred = preds.masks[:, :1] >= 0.5
    has_mask = bank.known[:, 0]
    if has_mask.any():
        rows = torch.nonzero(has_mask).flatten()
        dice = per_image_dice(pred[rows], bank.masks[rows, :1].bool()).flatten()
        order = rows[torch.argsort(dice)]
        pick = torch.cat([order[: n // 2], order[-(n - n // 2) :]]).unique(sorted=False)
        dice_of = dict(zip(rows.tolist(), dice.tolist(), strict=True))
    else:
        pick = torch.linspace(0, len(bank) - 1, min(n, len(bank))).round().long().unique()
        dice_of = {}
    titles = []
    for i in pick.tolist():
        top = int(preds.probs[i].argmax())
        text = f"{bank.records[i].name[:24]}  {classes[top]} {float(preds.probs[i, top]):.2f}"
        if i in dice_of:
            text += f"  dice {dice_of[i]:.2f}"
        titles.append(text)
    return Gallery(
        source=source,
        images=bank.images[pick, 0].numpy(),
        pred_masks=pred[pick, 0].numpy(),
        true_masks=bank.masks[pick, 0].numpy().astype(bool) if has_mask.any() else None,
        titles=titles,
    )


def build_report(
    out_dir: Path, run: Path, metrics: dict, kept: dict[str, tuple[Bank, Predictions]]
) -> Path:
    classes = metrics["classes"]
    galleries = [gallery(name, bank, preds, classes) for name, (bank, preds) in kept.items()]
    notes = [
        f"Run: {run}; checkpoint: {metrics['checkpoint']}.",
        "Sources used in training are scored on their held-out test part only (patient-grouped "
        "split saved in the run); other sources are scored in full (cross-domain).",
        "HD95 is in pixels at the run's image size; it is n/a where prediction or truth is empty.",
    ]
    return write_report(
        out_dir,
        "multimix evaluation",
        metrics,
        CsvLog(Path(run) / "train_log.csv").read(),
        CsvLog(Path(run) / "val_log.csv").read(),
        list(classes),
        galleries,
        notes,
    )
