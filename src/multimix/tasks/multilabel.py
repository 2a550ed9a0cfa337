"""Many findings per image, each its own sigmoid, from noisy and partly uncertain labels.

Label handling (see :class:`MultiLabelOptions`): an uncertainty policy, label smoothing, and a
choice of loss: ``bce``, ``focal`` (down-weights easy examples: class imbalance) or ``gce``
(generalized cross-entropy, bounded, so confidently wrong labels pull less: label noise), with
optional per-finding positive weights. With ``aux`` localization, a per-finding head learns
which lung zones hold each finding's box: the lung mask and the box maps are warped with every
view, and the zones are derived from the warped lungs, so targets always match what a view
shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from multimix.core.batch import LABELED, MASKED
from multimix.core.errors import ConfigError
from multimix.data.bank import Bank
from multimix.data.boxes import (
    BankBoxes,
    BankZones,
    bank_boxes,
    bank_zone_labels,
    box_masks,
    lung_channel,
)
from multimix.data.findings import POSITIVE, FindingSpace, check_policies, resolve
from multimix.data.zones import box_zones, lung_zones_batch
from multimix.methods.losses import multilabel_pseudo_label_loss
from multimix.models.heads import zone_logits
from multimix.tasks.base import TASKS, Task

AUX_TASKS = ("segmentation", "localization")
LOSSES = ("bce", "focal", "gce")
MAX_POS_WEIGHT = 10.0


@dataclass
class MultiLabelOptions:
    """Options of ``--task multilabel``; saved in config.json under ``task_options``."""

    aux: list[str] = field(
        default_factory=list, metadata={"help": "Auxiliary tasks: segmentation,localization."}
    )
    uncertain: str = field(
        default="ignore", metadata={"help": "Uncertain labels: ignore, negative, positive, soft."}
    )
    unmentioned: str = field(
        default="negative", metadata={"help": "Unmentioned findings: negative or ignore."}
    )
    soft_target: float = field(default=0.5, metadata={"help": "Target of uncertain (soft)."})
    label_smoothing: float = 0.0
    loss: str = field(
        default="bce", metadata={"flag": "ml-loss", "help": "bce, focal or gce (noise-robust)."}
    )
    focal_gamma: float = 2.0
    gce_q: float = 0.7
    pos_weight: str = field(
        default="none", metadata={"help": "none or auto (negatives/positives, at most 10)."}
    )
    w_loc: float = field(default=1.0, metadata={"help": "Localization loss weight."})
    zone_min_share: float = field(
        default=0.1, metadata={"help": "Share of a box's lung pixels that puts it in a zone."}
    )

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


class ZoneTargets:
    """The maps a labeled multi-label stream warps with its views, and the zone targets of each.

    Zones come only from lung masks the run may use (``mask_rows``: --labeled-seg), never from
    held-back ones.
    """

    def __init__(
        self,
        bank: Bank,
        n_findings: int,
        boxes: BankBoxes | None,
        zone_labels: BankZones | None,
        min_share: float,
        mask_rows: torch.Tensor,
    ) -> None:
        self.n_findings = n_findings
        self.boxes = boxes
        self.zone_labels = zone_labels or {}
        self.min_share = min_share
        self.lung = lung_channel(bank)
        self.bank = bank
        self.mask_allowed = torch.zeros(len(bank), dtype=torch.bool)
        self.mask_allowed[mask_rows] = True

    def maps(self, bank: Bank, rows: torch.Tensor) -> torch.Tensor | None:
        if (self.boxes is None and not self.zone_labels) or self.lung is None:
            return None
        size = bank.images.shape[-1]
        lungs = bank.masks[rows, self.lung : self.lung + 1].float()
        regions = box_masks(self.boxes or {}, rows, self.n_findings, size).float()
        self._paint_zone_labels(regions, rows, lungs[:, 0] > 0.5)
        return torch.cat([lungs, regions], dim=1)

    def extras(self, rows: torch.Tensor, maps: torch.Tensor) -> dict[str, torch.Tensor]:
        zones = lung_zones_batch(maps[:, 0] > 0.5)
        zone_y, touches = box_zones(maps[:, 1:] > 0.5, zones, self.min_share)
        usable = self.bank.known[rows, self.lung] & self.mask_allowed[rows]
        return {"zones": zones, "zone_y": zone_y, "zone_known": touches & usable[:, None]}

    def _paint_zone_labels(self, regions: torch.Tensor, rows: torch.Tensor, lungs: torch.Tensor):
        """A zone label becomes that zone's region of the (unaugmented) lungs, drawn like a box,
        so it moves with the image and a flipped image's zone names follow, as boxes' do."""
        labelled = [i for i, r in enumerate(rows.tolist()) if r in self.zone_labels]
        if not labelled:
            return
        zones = lung_zones_batch(lungs[labelled])
        for k, i in enumerate(labelled):
            for finding, zone in self.zone_labels[int(rows[i])]:
                regions[i, finding] = torch.maximum(regions[i, finding], (zones[k] == zone).float())


@TASKS.register()
class MultiLabel(Task):
    name = "multilabel"
    description = "findings per image (one sigmoid each), optional segmentation/localization"
    Options = MultiLabelOptions
    family = "multilabel"

    # -- training side ----------------------------------------------------------------------
    pos_weight: torch.Tensor | None = None

    def make_space(self) -> FindingSpace:
        return FindingSpace(self.classes, self.label_map)

    def check_data(self, class_data: list[str], seg_data: list[str]) -> None:
        if not class_data:
            raise ConfigError("--task multilabel needs --class-data folders with finding labels")
        if "segmentation" in self.options.aux and not seg_data:
            raise ConfigError("--aux segmentation needs --seg-data folders with masks")

    def model_options(self) -> dict:
        return {"task": self.name, "localization": "localization" in self.options.aux}

    def prepare(self, bank: Bank, rows: dict[str, torch.Tensor], roots: dict[str, Path]):
        """Positive weights from the labeled rows; with localization, the zone targets."""
        labeled = rows[LABELED]
        if self.options.pos_weight == "auto":
            self.pos_weight = auto_pos_weight(bank.targets[labeled][bank.labeled[labeled]])
        if "localization" not in self.options.aux:
            return None
        space = self.make_space()
        lung = lung_channel(bank)
        boxes = bank_boxes(bank, roots, space, labeled)
        zone_labels = bank_zone_labels(bank, roots, space, labeled)
        allowed = {int(r) for r in rows[MASKED]}  # masks within --labeled-seg
        usable = [
            r
            for r in {*boxes, *zone_labels}
            if lung is not None and r in allowed and bool(bank.known[r, lung])
        ]
        if not usable:
            raise ConfigError(
                "--aux localization needs boxes.csv boxes or zones.csv zone labels on labeled "
                "training images that also have lung masks the run may use (give the folder as "
                "--seg-data too; --labeled-seg limits them)"
            )
        return ZoneTargets(
            bank, len(self.classes), boxes, zone_labels, self.options.zone_min_share, rows[MASKED]
        )

    def supervised_loss(
        self, logits: torch.Tensor, codes: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        opt = self.options
        target, weight = resolve(codes, opt.uncertain, opt.unmentioned, opt.soft_target)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        loss = multilabel_loss(
            logits, target, weight, opt.loss, opt.label_smoothing, pos_weight,
            opt.focal_gamma, opt.gce_q,
        )  # fmt: skip
        return loss, {"loss_cls": loss.item()}

    def pseudo_label_loss(
        self, weak: torch.Tensor, strong: torch.Tensor, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return multilabel_pseudo_label_loss(weak, strong, threshold)

    def localization_loss(
        self, model, feats: list[torch.Tensor], extras: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """BCE on the zones holding each finding, where a view's zone targets are known."""
        if model.localizer is None or "zone_y" not in extras:
            return None
        zone_y = extras["zone_y"]
        known = extras["zone_known"].to(zone_y.dtype)[..., None].expand_as(zone_y)
        zl = zone_logits(model.localizer(feats), extras["zones"])
        per = F.binary_cross_entropy_with_logits(zl, zone_y, reduction="none")
        return (per * known).sum() / known.sum().clamp_min(1.0)

    def after_training(self, run, model, bank, val_rows, device) -> None:
        """Per-finding thresholds chosen on the validation images."""
        from multimix.engine.multilabel_eval import write_thresholds

        write_thresholds(run, model, bank, val_rows, self.classes, device)

    # -- evaluation and prediction side -----------------------------------------------------
