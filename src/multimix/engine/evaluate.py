"""Per-source metrics of a model on a bank: the ``sources`` block of metrics.json."""

from __future__ import annotations

from pathlib import Path

import torch

from multimix.core.errors import CheckpointError
from multimix.data.bank import Bank
from multimix.engine.inference import Predictions, predict
from multimix.metrics import segmentation_metrics
from multimix.models.net import MultiMixNet
from multimix.tasks.base import Task, task_for_model, task_of_block


def scores_masks(bank: Bank, rows: torch.Tensor, score_masks: bool = True) -> bool:
    """Whether ``rows`` get a segmentation block: masks asked for, and some of them known
    (so whether their masks need predicting at all)."""
    return score_masks and bool(bank.known[rows].any())


def source_metrics(
    bank: Bank,
    rows: torch.Tensor,
    preds: Predictions,
    classes: tuple[str, ...],
    structures: tuple[str, ...],
    score_labels: bool = True,
    score_masks: bool = True,
    task: Task | None = None,
) -> dict:
    """Metrics for ``rows`` of ``bank``; a block only where the rows carry labels or masks
    (and only the kinds asked for: validation skips a head the method does not train). The
    ``task`` (multi-class by default) makes its block, under its ``metric_key``."""
    from multimix.tasks.base import get_task

    out: dict = {"n_images": len(rows)}
    task = task or get_task("multiclass", classes)
    if score_labels and bank.labeled[rows].any():
        out[task.metric_key] = task.metric_block(bank, rows, preds)
    if scores_masks(bank, rows, score_masks):
        pred = preds.masks >= 0.5
        seg = segmentation_metrics(pred, bank.masks[rows].bool(), bank.known[rows], structures)
        if seg:
            out["segmentation"] = seg
    return out


def evaluate_sources(
    model: MultiMixNet,
    bank: Bank,
    rows_by_source: dict[str, torch.Tensor],
    classes: tuple[str, ...],
    device: torch.device,
    batch_size: int = 32,
    score_labels: bool = True,
    score_masks: bool = True,
    precision: str = "fp32",
) -> dict[str, dict]:
    """Predict once per source and score it; the decoder only runs on a source whose masks
    are scored (a class-only source costs the encoder alone)."""
    results = {}
    task = task_for_model(model, classes)
    for name, rows in rows_by_source.items():
        preds = predict(
            model, bank.images[rows], device, batch_size, task=task, precision=precision,
            masks=scores_masks(bank, rows, score_masks),
        )  # fmt: skip
        results[name] = source_metrics(
            bank, rows, preds, classes, bank.structures, score_labels, score_masks, task
        )
    return results


def summary_score(results: dict[str, dict]) -> float:
    """One number to pick the best checkpoint: mean of each source's Dice and the task's scores
    (:meth:`~multimix.tasks.base.Task.score_parts`: AUC or accuracy, mean AUC over findings)."""
    scores = []
    for block in results.values():
        seg = block.get("segmentation")
        if seg and seg.get("dice") is not None:
            scores.append(seg["dice"])
        found = task_of_block(block)
        if found is not None:
            task, task_block = found
            scores += task.score_parts(task_block)
    return sum(scores) / len(scores) if scores else float("nan")


def load_run(run: Path, which: str = "best", device: torch.device | str = "cpu"):
    """The run's config and network (``best`` or ``last`` checkpoint)."""
    from multimix.config import TrainConfig
    from multimix.engine.checkpoint import load_weights

    run = Path(run)
    if not run.is_dir():
        raise CheckpointError(run, "run folder not found")
    cfg = TrainConfig.load(run)
    model = load_weights(run / "checkpoints" / f"{which}.safetensors", device)
    if model.cfg.n_classes != len(cfg.classes) or model.cfg.n_structures != len(cfg.structures):
        raise CheckpointError(run, "checkpoint does not match the run's classes or structures")
    return cfg, model
