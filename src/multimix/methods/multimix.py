"""MultiMix and the ablations of the paper's table, as one objective with switches.

    unet      segmentation only, supervised
    enc       classifier only, supervised
    encssl    classifier + FixMatch pseudo-labels
    umtl      joint classifier and decoder, supervised
    umtls     joint + pseudo-labels (no bridge)
    multimix-paper  joint + pseudo-labels + saliency bridge + segmentation consistency

These reproduce the paper's table; the project's best joint method, ``multimix``, learns from
unlabeled images far more (pixel pseudo-masks, CutMix, guarded pseudo-labels): see
:mod:`multimix.methods.joint`.

Every stream a method uses goes through the shared encoder in one concatenated pass (so batch
norm sees them together, as in FixMatch); the saliency for the bridge is the input gradient of
that same pass (walked back by hand over the mask images only, when the encoder allows it); the
decoder runs only on the images whose masks are used.
"""

from __future__ import annotations

import torch
from torch import nn

from multimix.core.batch import LABELED, MASKED, UNLABELED, UNMASKED, Batch, Stream
from multimix.methods.base import LossWeights, Method, register
from multimix.methods.losses import bernoulli_kl, dice_bce
from multimix.models.net import leading_rows
from multimix.models.saliency import bridge_saliency, bridge_trace


class JointObjective(Method):
    """Switches select the paper's rows; subclasses below only set them."""

    classify = False
    segment = False
    pseudo = False
    bridge = False
    consistency = False

    @property
    def streams(self) -> dict[str, Stream]:
        chosen = {
            MASKED: (Stream(MASKED, masks=True), self.segment),
            UNMASKED: (Stream(UNMASKED), self.consistency),
            LABELED: (Stream(LABELED, targets=True), self.classify),
            UNLABELED: (Stream(UNLABELED, ("weak", "strong"), size="unlabeled"), self.pseudo),
        }
        return {name: stream for name, (stream, on) in chosen.items() if on}

    @property
    def uses_bridge(self) -> bool:
        return self.bridge

    def loss(
        self, model: nn.Module, batch: Batch, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        w, task = self.options, self.task
        parts = {
            "seg": batch[MASKED]["weak"].x if self.segment else None,
            "segu": batch[UNMASKED]["weak"].x if self.consistency else None,
            "cls": batch[LABELED]["weak"].x if self.classify else None,
            "weak": batch[UNLABELED]["weak"].x if self.pseudo else None,
            "strong": batch[UNLABELED]["strong"].x if self.pseudo else None,
        }
        sizes = {k: (0 if v is None else v.shape[0]) for k, v in parts.items()}
        x = torch.cat([v for v in parts.values() if v is not None])
        n_dec = sizes["seg"] + sizes["segu"]  # rows the decoder runs on, first in the batch
        trace = bridge_trace(model.traceable, x) if self.bridge else None
        feats = model.encode(x, trace)
        needs_logits = self.classify or self.pseudo or self.bridge
        logits = model.classify(feats) if needs_logits else None
        logs: dict[str, float] = {}
        total = x.new_zeros(())

        if self.segment:
            sal = bridge_saliency(logits, feats, trace, x, n_dec) if self.bridge else None
            image = x[:n_dec].detach() if self.bridge else None
            mask_logits = model.segment([leading_rows(f, n_dec) for f in feats], image, sal)
            n_seg = sizes["seg"]
            seg_view = batch[MASKED]["weak"]
            seg = dice_bce(mask_logits[:n_seg], seg_view.masks, batch[MASKED].known)
            total = total + w.seg * seg
            logs["loss_seg"] = seg.item()
            if self.consistency and sizes["segu"]:
                m = min(n_seg, sizes["segu"])
                # Labeled predictions are anchored by ground truth: they are the target.
                kl = bernoulli_kl(mask_logits[:m].detach(), mask_logits[n_seg : n_seg + m])
                total = total + w.consistency * kl
                logs["loss_kl"] = kl.item()

        offset = n_dec
        if self.classify:
            cls_logits = logits[offset : offset + sizes["cls"]]
            ce, cls_logs = task.supervised_loss(cls_logits, batch[LABELED].targets)
            total = total + w.cls * ce
            logs |= cls_logs
            offset += sizes["cls"]
        if self.pseudo:
            weak = logits[offset : offset + sizes["weak"]]
            strong = logits[offset + sizes["weak"] :]
            pl, keep = task.pseudo_label_loss(weak, strong, w.threshold)
            total = total + w.pseudo * pl
            logs["loss_pseudo"] = pl.item()
            logs["pseudo_kept"] = keep.float().mean().item()
        logs["loss"] = total.item()
        return total, logs


@register
class UNet(JointObjective):
    name, description = "unet", "segmentation only, supervised"
    segment = True


@register
class Enc(JointObjective):
    name, description = "enc", "classifier only, supervised"
    classify = True


@register
class EncSSL(JointObjective):
    name, description = "encssl", "classifier + FixMatch pseudo-labels"
    classify = pseudo = True


@register
class UMTL(JointObjective):
    name, description = "umtl", "joint classification and segmentation, supervised"
    classify = segment = True


@register
class UMTLS(JointObjective):
    name, description = "umtls", "joint + pseudo-labels, no bridge"
    classify = segment = pseudo = True


@register
class MultiMixPaper(JointObjective):
    name = "multimix-paper"
    description = "the paper's MultiMix: joint + pseudo-labels + bridge + KL"
    classify = segment = pseudo = bridge = consistency = True


def segmentation_pretraining(bridge: bool, weights: LossWeights, task) -> JointObjective:
    """Masks-only objective for pre-training on pseudo-masks; keeps the model's bridge in use."""
    method = UNet(weights, task)
    method.bridge = bridge
    return method
