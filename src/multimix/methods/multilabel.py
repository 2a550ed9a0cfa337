"""Multi-label findings with optional auxiliary tasks (``--task multilabel``).

One sigmoid output per finding, trained on noisy and partly uncertain labels, optionally with
lung/heart/... segmentation and per-finding lung-zone localization sharing the encoder:

    --aux segmentation    Dice + BCE on the structures' masks (where an image has them)
    --aux localization    BCE on the zones that hold each finding's box (where it has one)

Label handling (see ``MultiLabelOptions``): an uncertainty policy, label smoothing, and a choice
of loss: ``bce``, ``focal`` (down-weights easy examples: class imbalance) or ``gce``
(generalized cross-entropy, bounded, so confidently wrong labels pull less: label noise), with
optional per-finding positive weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from multimix.core.errors import ConfigError
from multimix.data.findings import POSITIVE, check_policies, resolve
from multimix.methods.base import CLS, SEG, UNLABELED, Batch, Method, register
from multimix.methods.losses import dice_bce, multilabel_pseudo_label_loss
from multimix.models.heads import zone_logits
from multimix.models.net import MultiMixNet

AUX_TASKS = ("segmentation", "localization")
LOSSES = ("bce", "focal", "gce")
MAX_POS_WEIGHT = 10.0


@dataclass
class MultiLabelOptions:
    """Options of ``--task multilabel``; saved in config.json under ``multilabel``."""

    aux: list[str] = field(default_factory=list)  # segmentation, localization
    uncertain: str = "ignore"  # ignore | negative | positive | soft
    unmentioned: str = "negative"  # negative | ignore (CheXpert blanks)
    soft_target: float = 0.5
    label_smoothing: float = 0.0
    loss: str = "bce"  # bce | focal | gce
    focal_gamma: float = 2.0
    gce_q: float = 0.7
    pos_weight: str = "none"  # none | auto (negatives/positives per finding, at most 10)
    w_loc: float = 1.0
    zone_min_share: float = 0.1  # share of a box's lung pixels that puts it in a zone

    def validate(self) -> None:
        unknown = [a for a in self.aux if a not in AUX_TASKS]
        if unknown:
            raise ConfigError(f"--aux takes {', '.join(AUX_TASKS)}; not {', '.join(unknown)}")
        check_policies(self.uncertain, self.unmentioned, self.soft_target)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError("--label-smoothing must lie in [0, 1)")
        if self.loss not in LOSSES:
            raise ConfigError(f"--ml-loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.pos_weight not in ("none", "auto"):
            raise ConfigError("--pos-weight must be none or auto")
        if not 0.0 < self.gce_q <= 1.0 or self.focal_gamma < 0:
            raise ConfigError("gce_q must lie in (0, 1] and focal_gamma be >= 0")
        if not 0.0 < self.zone_min_share <= 1.0:
            raise ConfigError("zone_min_share must lie in (0, 1]")


def multilabel_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    kind: str = "bce",
    smoothing: float = 0.0,
    pos_weight: torch.Tensor | None = None,
    focal_gamma: float = 2.0,
    gce_q: float = 0.7,
) -> torch.Tensor:
    """Mean over supervised (weight > 0) entries of a per-finding binary loss.

    Every loss is written as ``t * positive_term + (1 - t) * negative_term``, so soft targets
    (uncertainty policy ``soft``, label smoothing) and positive weights mean the same for all.
    """
    target = target * (1.0 - smoothing) + 0.5 * smoothing
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
    if kind == "bce":
        pos, neg = -log_p, -log_q
    elif kind == "focal":
        p = torch.sigmoid(logits)
        pos, neg = -log_p * (1 - p) ** focal_gamma, -log_q * p**focal_gamma
    elif kind == "gce":  # (1 - p^q) / q: tends to BCE as q -> 0, to MAE (robust) at q = 1
        pos = (1 - torch.exp(gce_q * log_p)) / gce_q
        neg = (1 - torch.exp(gce_q * log_q)) / gce_q
    else:
        raise ConfigError(f"unknown multi-label loss {kind!r}")
    if pos_weight is not None:
        pos = pos * pos_weight
    loss = target * pos + (1 - target) * neg
    return (loss * weight).sum() / weight.sum().clamp_min(1.0)


def auto_pos_weight(codes: torch.Tensor) -> torch.Tensor:
    """Negatives / positives per finding over labeled rows' codes, in [1, MAX_POS_WEIGHT]."""
    pos = (codes == POSITIVE).sum(0).float()
    neg = (codes == 0).sum(0).float()
    return (neg / pos.clamp_min(1.0)).clamp(1.0, MAX_POS_WEIGHT)


@register
@dataclass
class MultiLabel(Method):
    """Sigmoid findings head; segmentation and localization as chosen auxiliaries."""

    name = "multilabel"
    description = "multi-label findings, optional segmentation/localization aux (--task multilabel)"
    options: MultiLabelOptions = field(default_factory=MultiLabelOptions)
    pos_weight: torch.Tensor | None = None
    semi_supervised: bool = False  # FixMatch pseudo-labels per finding on unlabeled images

    @property
    def streams(self) -> tuple[str, ...]:
        base = (SEG, CLS) if "segmentation" in self.options.aux else (CLS,)
        return (*base, UNLABELED) if self.semi_supervised else base

    @property
    def localization(self) -> bool:
        return "localization" in self.options.aux

    def loss(self, model: MultiMixNet, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        w, opt = self.weights, self.options
        segment = SEG in self.streams
        n_seg = batch.seg_x.shape[0] if segment else 0
        n_cls = batch.cls_x.shape[0]
        parts = [batch.seg_x] if segment else []
        parts.append(batch.cls_x)
        if self.semi_supervised:  # one encoder pass for every view, as in FixMatch
            parts += [batch.weak_x, batch.strong_x]
        feats = model.encode(torch.cat(parts) if len(parts) > 1 else parts[0])
        all_logits = model.classify([f[n_seg:] for f in feats])
        cls_feats = [f[n_seg : n_seg + n_cls] for f in feats]
        logits = all_logits[:n_cls]
        target, weight = resolve(batch.cls_codes, opt.uncertain, opt.unmentioned, opt.soft_target)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        cls = multilabel_loss(
            logits, target, weight, opt.loss, opt.label_smoothing, pos_weight,
            opt.focal_gamma, opt.gce_q,
        )  # fmt: skip
        total = w.cls * cls
        logs = {"loss_cls": cls.item()}
        if self.semi_supervised:
            weak, strong = all_logits[n_cls:].chunk(2)
            pseudo, keep = multilabel_pseudo_label_loss(weak, strong, w.threshold)
            total = total + w.pseudo * pseudo
            logs |= {"loss_pseudo": pseudo.item(), "pseudo_kept": keep.float().mean().item()}
        if segment:
            mask_logits = model.segment([f[:n_seg] for f in feats])
            seg = dice_bce(mask_logits, batch.seg_y, batch.seg_known)
            total = total + w.seg * seg
            logs["loss_seg"] = seg.item()
        if self.localization and model.localizer is not None:
            known = batch.zone_known.to(logits.dtype)[..., None].expand_as(batch.zone_y)
            zl = zone_logits(model.localizer(cls_feats), batch.cls_zones)
            per = F.binary_cross_entropy_with_logits(zl, batch.zone_y, reduction="none")
            loc = (per * known).sum() / known.sum().clamp_min(1.0)
            total = total + opt.w_loc * loc
            logs["loss_loc"] = loc.item()
        logs["loss"] = total.item()
        return total, logs
