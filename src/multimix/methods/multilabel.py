"""Multi-label findings with optional auxiliary segmentation and localization.

``multilabel`` trains the findings head on the task's loss (:mod:`multimix.tasks.multilabel`:
uncertainty policy, smoothing, BCE / focal / GCE), plus, as ``--aux`` asks, Dice + BCE on the
structures' masks and BCE on the zones that hold each finding's box. ``multimix`` on the
multi-label task adds per-finding FixMatch pseudo-labels on unlabeled images.
"""

from __future__ import annotations

import torch
from torch import nn

from multimix.core.batch import LABELED, MASKED, UNLABELED, Batch, Stream
from multimix.methods.base import Method, register
from multimix.methods.losses import dice_bce


@register
class MultiLabel(Method):
    """Sigmoid findings head; segmentation and localization as the task's ``aux`` chooses."""

    name = "multilabel"
    description = "multi-label findings, optional segmentation/localization aux (--task multilabel)"
    tasks = ("multilabel",)
    semi_supervised = False

    @property
    def streams(self) -> dict[str, Stream]:
        out = {}
        if "segmentation" in self.task.options.aux:
            out[MASKED] = Stream(MASKED, masks=True)
        if self.semi_supervised:
            out[UNLABELED] = Stream(UNLABELED, ("weak", "strong"), size="unlabeled")
        out[LABELED] = Stream(LABELED, targets=True)  # last: it draws the task's zone maps
        return out

    def loss(
        self, model: nn.Module, batch: Batch, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        w, task = self.options, self.task
        segment = MASKED in self.streams
        labeled = batch[LABELED]
        n_seg = len(batch[MASKED]) if segment else 0
        n_cls = len(labeled)
        parts = [batch[MASKED]["weak"].x] if segment else []
        parts.append(labeled["weak"].x)
        if self.semi_supervised:  # one encoder pass for every view, as in FixMatch
            parts += [batch[UNLABELED]["weak"].x, batch[UNLABELED]["strong"].x]
        feats = model.encode(torch.cat(parts) if len(parts) > 1 else parts[0])
        all_logits = model.classify([f[n_seg:] for f in feats])
        cls_feats = [f[n_seg : n_seg + n_cls] for f in feats]
        logits = all_logits[:n_cls]
        cls, logs = task.supervised_loss(logits, labeled.targets)
        total = w.cls * cls
        if self.semi_supervised:
            weak, strong = all_logits[n_cls:].chunk(2)
            pseudo, keep = task.pseudo_label_loss(weak, strong, w.threshold)
            total = total + w.pseudo * pseudo
            logs |= {"loss_pseudo": pseudo.item(), "pseudo_kept": keep.float().mean().item()}
        if segment:
            mask_logits = model.segment([f[:n_seg] for f in feats])
            seg = dice_bce(mask_logits, batch[MASKED]["weak"].masks, batch[MASKED].known)
            total = total + w.seg * seg
            logs["loss_seg"] = seg.item()
        loc = task.localization_loss(model, cls_feats, labeled["weak"].extras)
        if loc is not None:
            total = total + task.options.w_loc * loc
            logs["loss_loc"] = loc.item()
        logs["loss"] = total.item()
        return total, logs


@register
class MultiLabelSSL(MultiLabel):
    """``--task multilabel --method multimix``: adds per-finding pseudo-labels."""

    name = "multimix"
    description = "multi-label findings + per-finding FixMatch pseudo-labels on unlabeled images"
    semi_supervised = True
