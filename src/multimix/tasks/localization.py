"""Localization scores of a multi-label run: box IoU hit rates and zone accuracy of the
finding maps on the images that have boxes (``evaluate``'s ``localization`` block)."""

from __future__ import annotations

import torch

from multimix.data.bank import Bank
from multimix.data.boxes import BankBoxes, box_masks, lung_channel
from multimix.data.zones import box_zones, lung_zones
from multimix.metrics.localization import box_iou, hit_rates, map_boxes
from multimix.models.heads import zones_held
from multimix.models.inference import Predictions
from multimix.models.net import MultiMixNet


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
