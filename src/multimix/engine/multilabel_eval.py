"""Evaluation of the multi-label task: thresholded findings and localization blocks, and the
per-finding thresholds chosen on the run's validation images (``RUN/thresholds.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from multimix.data.bank import Bank, load_bank
from multimix.data.boxes import BankBoxes, box_masks, lung_channel
from multimix.data.findings import FindingSpace
from multimix.data.zones import box_zones, lung_zones
from multimix.engine.inference import Predictions, predict
from multimix.metrics.localization import box_iou, hit_rates, map_boxes
from multimix.metrics.multilabel import DEFAULT_THRESHOLD, choose_thresholds, multilabel_metrics
from multimix.models.heads import zones_held
from multimix.models.net import MultiMixNet

THRESHOLDS_FILE = "thresholds.json"


def multilabel_block(
    bank: Bank, rows: torch.Tensor, preds: Predictions, findings: tuple[str, ...], thresholds=None
) -> dict | None:
    """The ``multilabel`` block for ``rows`` (None when none of them is labeled)."""
    labeled = bank.labeled[rows]
    if not labeled.any():
        return None
    codes = bank.targets[rows][labeled].numpy()
    return multilabel_metrics(preds.probs[labeled].numpy(), codes, findings, thresholds)


def localization_block(
    model: MultiMixNet,
    bank: Bank,
    preds: Predictions,
    boxes: BankBoxes,
    min_share: float = 0.1,
) -> dict | None:
    """Box IoU hit rates and zone accuracy on the images of ``bank`` that have boxes.

    Boxes come from the finding maps (the localization head's, else the classifier's CAM).
    Zones come from the true lung mask where the image has one, else from the predicted one;
    predicted zones are the localization head's zone scores above 0.5, or, without that head,
    the zones the largest CAM box falls in.
    """
    if not boxes or preds.maps is None:
        return None
    size = bank.images.shape[-1]
    n_findings = preds.maps.shape[1]
    lung = lung_channel(bank)
    ious: list[float] = []
    right, total = 0, 0
    for row, row_boxes in sorted(boxes.items()):
        maps = preds.maps[row]
        gt = box_masks(boxes, torch.tensor([row]), n_findings, size)[0].bool()
        zones = _zones(bank, preds, row, lung)
        for f in sorted({b[0] for b in row_boxes}):
            found = map_boxes(maps[f], size)
            for _, x0, y0, x1, y1 in (b for b in row_boxes if b[0] == f):
                ious.append(max((box_iou((x0, y0, x1, y1), p) for p in found), default=0.0))
            if zones is None:
                continue
            true, touches = box_zones(gt[f][None, None], zones[None], min_share)
            if not touches.item():
                continue
            pred = _predicted_zones(model, maps[f], found, zones, size, min_share)
            right += int((pred == true[0, 0].bool()).sum())
            total += true.shape[-1]
    return {
        "n_boxes": len(ious),
        "cam": "localization_head" if model.localizer is not None else "classifier_cam",
        "box_iou_hit": hit_rates(ious),
        "mean_iou": float(sum(ious) / len(ious)) if ious else None,
        "zone_accuracy": right / total if total else None,
    }


def _zones(bank: Bank, preds: Predictions, row: int, lung: int | None) -> torch.Tensor | None:
    if lung is not None and bank.known[row, lung]:
        return lung_zones(bank.masks[row, lung].bool())
    if lung is not None and preds.masks.numel():
        return lung_zones(preds.masks[row, lung].float() >= 0.5)
    return None


def _predicted_zones(model, fmap, found, zones, size, min_share) -> torch.Tensor:
    if model.localizer is not None:
        return zones_held(fmap[None, None], zones[None])[0, 0]
    mask = torch.zeros((1, 1, size, size), dtype=torch.bool)
    if found:
        x0, y0, x1, y1 = (int(v) for v in found[0])
        mask[0, 0, y0:y1, x0:x1] = True
    return box_zones(mask, zones[None], min_share)[0][0, 0].bool()


# -- thresholds ------------------------------------------------------------------------------
def choose_run_thresholds(run: Path, device: torch.device | str = "cpu") -> dict[str, float]:
    """Per-finding F1-best thresholds of the best checkpoint on the validation parts of the
    run's class sources; written to ``RUN/thresholds.json`` (0.5 where a finding has no
    validation positives)."""
    from multimix.data.assemble import load_split
    from multimix.data.sources import load_source
    from multimix.engine.evaluate import load_run

    run = Path(run)
    cfg, model = load_run(run, device=device)
    space = cfg.make_task().space
    split = load_split(run / "split.json")
    records = []
    for info in split["sources"].values():
        if "class" in info["roles"] and info["val"]:
            by_name = load_source(info["root"]).by_name()
            records += [by_name[n] for n in info["val"] if n in by_name]
    bank = load_bank(records, cfg.image_size, (), space, "choosing thresholds") if records else None
    rows = torch.arange(len(bank)) if bank is not None else torch.zeros(0, dtype=torch.long)
    return write_thresholds(run, model, bank, rows, space.classes, torch.device(device))


def write_thresholds(
    run: Path,
    model: MultiMixNet,
    bank: Bank | None,
    rows: torch.Tensor,
    findings: tuple[str, ...],
    device: torch.device,
) -> dict[str, float]:
    """F1-best thresholds of ``model`` on the labeled ``rows`` of ``bank`` (validation images),
    written to ``RUN/thresholds.json``; 0.5 where a finding has no validation positives."""
    from multimix.core.atomic import atomic_write_text

    thresholds = {f: DEFAULT_THRESHOLD for f in findings}
    n = 0
    if bank is not None and len(rows):
        rows = rows[bank.labeled[rows]]
        n = len(rows)
        if n:
            preds = predict(model, bank.images[rows], device)
            codes = bank.targets[rows].numpy()
            thresholds = choose_thresholds(preds.probs.numpy(), codes, findings)
    body = {"checkpoint": "best", "chosen_on": "val", "n_images": n, "thresholds": thresholds}
    atomic_write_text(Path(run) / THRESHOLDS_FILE, json.dumps(body, indent=2))
    return thresholds


def run_thresholds(run: Path, device: torch.device | str = "cpu") -> dict[str, float]:
    """The run's thresholds, chosen now if missing or older than its best checkpoint."""
    path = Path(run) / THRESHOLDS_FILE
    best = Path(run) / "checkpoints" / "best.safetensors"
    if path.exists() and (not best.exists() or path.stat().st_mtime >= best.stat().st_mtime):
        try:
            return dict(json.loads(path.read_text())["thresholds"])
        except (ValueError, KeyError, TypeError):
            pass  # damaged: choose again
    return choose_run_thresholds(run, device)


def multilabel_extras(
    model: MultiMixNet,
    bank: Bank,
    preds: Predictions,
    space: FindingSpace,
    thresholds: dict[str, float],
    min_share: float,
) -> dict:
    """Blocks ``evaluate`` adds for a multi-label run: thresholded ``multilabel`` and
    ``localization`` (where the source has boxes for the task's findings)."""
    from multimix.data.boxes import bank_boxes, bank_roots

    out = {}
    block = multilabel_block(bank, torch.arange(len(bank)), preds, space.classes, thresholds)
    if block is not None:
        out["multilabel"] = block
    loc = localization_block(
        model, bank, preds, bank_boxes(bank, bank_roots(bank), space), min_share
    )
    if loc is not None:
        out["localization"] = loc
    return out
