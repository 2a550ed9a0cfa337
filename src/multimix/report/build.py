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
from multimix.methods.base import Regions
from multimix.metrics.segmentation import per_image_dice
from multimix.report.html import Gallery, SourceScores, write_report
from multimix.tasks.base import Task, task_of_run

GALLERY_SIZE = 6  # images per best / worst / false-positive / false-negative gallery

# (bank, preds, rows, classes to explain or None for the predicted class) -> (n, S, S) maps
Heatmaps = Callable[[Bank, Predictions, torch.Tensor, torch.Tensor | None], np.ndarray]
# (bank, rows) -> the region the run's method judged each image on, and its values
RegionMaker = Callable[[Bank, torch.Tensor], Regions | None]


def _title(bank: Bank, preds: Predictions, task: Task, i: int, extra: str = "") -> str:
    """Image name and the task's description of its prediction (class, or findings present)."""
    text = f"{bank.records[i].name[:24]}  {task.describe(preds.probs[i])}"
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


def make_gallery(
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
    task: Task,
    n: int = 12,
) -> Gallery:
    """Up to ``n`` examples: with masks, the worst and best by Dice; else evenly spread; the
    ``task`` captions each prediction."""
    rows, dice = _lung_dice(bank, preds)
    if len(rows):
        order = rows[torch.argsort(dice)]
        pick = torch.cat([order[: n // 2], order[-(n - n // 2) :]]).unique(sorted=False)
        dice_of = dict(zip(rows.tolist(), dice.tolist(), strict=True))
    else:
        pick = torch.linspace(0, len(bank) - 1, min(n, len(bank))).round().long().unique()
        dice_of = {}
    titles = [
        _title(bank, preds, task, i, f"dice {dice_of[i]:.2f}" if i in dice_of else "")
        for i in pick.tolist()
    ]
    return make_gallery(source, bank, preds, pick, titles, "Examples")


def segmentation_galleries(
    source: str,
    bank: Bank,
    preds: Predictions,
    task: Task,
    n: int = GALLERY_SIZE,
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
                _title(bank, preds, task, int(rows[k]), f"dice {float(dice[k]):.2f}")
                for k in picked.tolist()
            ]
            out.append(make_gallery(source, bank, preds, rows[picked], titles, heading))
    return out


def error_galleries(
    source: str,
    bank: Bank,
    preds: Predictions,
    task: Task,
    heatmaps: Heatmaps | None,
    heatmap_name: str,
    regions: RegionMaker | None = None,
) -> list[Gallery]:
    """The task's error galleries (:meth:`~multimix.tasks.base.Task.error_groups`: false
    positives / negatives, misclassified images, per-finding errors), with explanation maps
    and, for a method that judges images on a region (``regions``), that region's outline on
    the map and its values in a table."""
    out = []
    for group in task.error_groups(bank, preds, GALLERY_SIZE):
        rows = group.rows
        maps = heatmaps(bank, preds, rows, group.targets) if heatmaps and len(rows) else None
        found = regions(bank, rows) if regions is not None and len(rows) else None
        caption = f"{group.caption} Red: predicted lung mask; green: reference mask (where known)."
        if maps is not None:
            caption += f" Right of each image: its {heatmap_name} map for {group.map_of}."
        extra = {}
        if found is not None:
            caption += " Blue outline: the region the method judged the image on."
            extra = {
                "regions": found.masks.numpy(),
                "region_values": found.values,
                "region_caption": f"{found.caption}; columns: the images in order.",
            }
        out.append(
            make_gallery(
                source,
                bank,
                preds,
                rows,
                group.titles,
                group.heading,
                heatmaps=maps,
                heatmap_name=heatmap_name,
                caption=caption,
                **extra,
            )
        )
    return out


def region_maker(run: Path, cfg, task: Task, checkpoint: str, device: str) -> RegionMaker | None:
    """The run's method's regions (:meth:`Method.regions <multimix.methods.base.Method.regions>`)
    of bank rows, from the evaluated checkpoint; None for a method without them."""
    from multimix.core.errors import ConfigError
    from multimix.methods.base import Method

    try:
        method = cfg.make_method(task)
    except ConfigError:  # a run whose method is no longer registered: a report without them
        return None
    if type(method).regions is Method.regions:
        return None
    from multimix.engine.evaluate import load_run
    from multimix.engine.runtime import select_device

    dev = select_device(device)
    _, model = load_run(run, checkpoint, dev)
    model.eval()

    def regions(bank: Bank, rows: torch.Tensor) -> Regions | None:
        return method.regions(model, bank.float_images(rows).to(dev))

    return regions


def source_scores(source: str, bank: Bank, preds: Predictions, task: Task) -> SourceScores:
    """ROC inputs (the task's labels or finding codes) and the lung Dice of one source."""
    labeled = bank.labeled
    _, dice = _lung_dice(bank, preds)
    return SourceScores(
        source=source,
        probs=preds.probs[labeled].numpy() if labeled.any() else None,
        dice=dice.numpy() if len(dice) else None,
        **task.roc_inputs(bank),
    )


def _first_explain_method(metrics: dict) -> str | None:
    for block in metrics.get("sources", {}).values():
        for method in block.get("explanations") or {}:
            return method
    return None


def _heatmap_maker(
    run: Path, metrics: dict, kept: dict, method: str | None, device: str, reuse: bool = True
) -> tuple[Heatmaps, str]:
    """Maps for the error galleries: ``method`` if given; else (with ``reuse``) the saliency
    the model returned with its predictions (bridge models); else plain saliency computed here,
    for the class each entry names (its target) or the predicted class."""
    kept_saliency = all(preds.saliency is not None for _, preds in kept.values())
    if method is None and reuse and kept_saliency:

        def from_predictions(
            bank: Bank, preds: Predictions, rows: torch.Tensor, targets: torch.Tensor | None
        ) -> np.ndarray:
            return preds.saliency[rows, 0].float().numpy()

        return from_predictions, "saliency"

    from multimix.engine.evaluate import load_run
    from multimix.engine.runtime import select_device
    from multimix.explain.attributions import explain

    method = method or "saliency"
    dev = select_device(device)
    _, model = load_run(run, metrics.get("checkpoint", "best"), dev)

    def computed(
        bank: Bank, preds: Predictions, rows: torch.Tensor, targets: torch.Tensor | None
    ) -> np.ndarray:
        x = bank.float_images(rows).to(dev)
        if targets is None:
            maps = explain(model, x, method)
        else:
            maps = explain(model, x, method, target=targets.to(dev))
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
    from multimix.config import TrainConfig

    classes = list(metrics["classes"])
    method = explain_method or _first_explain_method(metrics)
    cfg = TrainConfig.load(Path(run))
    task = task_of_run(cfg, tuple(classes))
    task_notes = task.prepare_report(Path(run)) if kept else []
    heatmaps, heatmap_name = (None, "")
    if any(bank.labeled.any() for bank, _ in kept.values()):
        reuse = not task.explains_class_in_error
        heatmaps, heatmap_name = _heatmap_maker(Path(run), metrics, kept, method, device, reuse)
    regions = None
    if heatmaps is not None:
        regions = region_maker(Path(run), cfg, task, metrics.get("checkpoint", "best"), device)
    galleries, scores = [], []
    for name, (bank, preds) in kept.items():
        seg = segmentation_galleries(name, bank, preds, task)
        galleries += seg or [gallery(name, bank, preds, task)]
        galleries += error_galleries(name, bank, preds, task, heatmaps, heatmap_name, regions)
        scores.append(source_scores(name, bank, preds, task))
    notes = [
        f"Run: {run}; checkpoint: {metrics['checkpoint']}.",
        "Sources used in training are scored on their held-out test part only (patient-grouped "
        "split saved in the run); other sources are scored in full (cross-domain).",
        "HD95 is in pixels at the run's image size; it is n/a where prediction or truth is empty.",
    ]
    notes += task_notes
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
