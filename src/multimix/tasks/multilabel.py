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
from multimix.data.findings import NEGATIVE, POSITIVE, FindingSpace, check_policies, resolve
from multimix.data.zones import box_zones, lung_zones_batch
from multimix.methods.losses import multilabel_pseudo_label_loss
from multimix.models.heads import zone_logits
from multimix.tasks.base import TASKS, ErrorGroup, PredictionOutput, Task

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
        space = self.space
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

    # -- evaluation and prediction side -----------------------------------------------------
    # Only certain labels are scored: an uncertain or unmentioned finding says nothing about
    # whether the prediction was right. A finding is present at or above its threshold
    # (RUN/thresholds.json, chosen on validation after training; see tasks.thresholds).
    metric_key = "multilabel"
    explains_class_in_error = True  # each error is one (image, finding), explained for it

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """One sigmoid per finding."""
        return torch.sigmoid(logits.float())

    def keeps_activation_maps(self, model) -> bool:
        """Always: localization is scored from the maps (the head's, else the CAM)."""
        return True

    def metric_block(self, bank, rows, preds, thresholds=None) -> dict | None:
        """Per-finding AUC and precision/recall/F1 at ``thresholds`` (default 0.5)."""
        from multimix.metrics.findings import finding_metrics

        labeled = bank.labeled[rows]
        if not labeled.any():
            return None
        codes = bank.targets[rows][labeled].numpy()
        return finding_metrics(preds.probs[labeled].numpy(), codes, self.classes, thresholds)

    def summary(self, block: dict) -> dict:
        """Mean AUC and macro F1 over findings."""
        return {"accuracy": None, "auc": block["mean_auc"], "f1_macro": block["f1_macro"]}

    def score_parts(self, block: dict) -> list[float]:
        """The mean AUC over findings."""
        return [block["mean_auc"]] if block.get("mean_auc") is not None else []

    def extra_metrics(self, run, model, bank, preds, space, device) -> dict:
        """The block at the run's thresholds (chosen now if missing) and ``localization``
        where the source has boxes for the task's findings."""
        from multimix.data.boxes import bank_boxes, bank_roots
        from multimix.tasks import thresholds as th
        from multimix.tasks.localization import localization_block

        def choose() -> dict[str, float]:
            val = th.validation_bank(Path(run), bank.images.shape[-1], self.space)
            rows = torch.arange(len(val)) if val is not None else torch.zeros(0, dtype=torch.long)
            return self.choose_thresholds(run, model, val, rows, torch.device(device))

        thresholds = th.run_thresholds(Path(run), choose)
        out = {}
        block = self.metric_block(bank, torch.arange(len(bank)), preds, thresholds)
        if block is not None:
            out[self.metric_key] = block
        share = self.option("zone_min_share", 0.1)
        boxes = bank_boxes(bank, bank_roots(bank), space)
        loc = localization_block(model, bank, preds, boxes, share)
        if loc is not None:
            out["localization"] = loc
        return out

    def after_training(self, run, model, bank, val_rows, device) -> None:
        """Choose the per-finding thresholds on the validation rows; ``RUN/thresholds.json``."""
        self.choose_thresholds(run, model, bank, val_rows, device)

    def choose_thresholds(self, run, model, bank, rows, device) -> dict[str, float]:
        """F1-best thresholds of ``model`` on the labeled ``rows``, written to the run."""
        from multimix.models.inference import run_model
        from multimix.tasks.thresholds import write_thresholds

        def probabilities(bank, rows: torch.Tensor) -> torch.Tensor:
            return run_model(
                model, bank.images[rows], device, self.probabilities, masks=False
            ).probs

        return write_thresholds(Path(run), bank, rows, self.classes, probabilities)

    def read_thresholds(self, run) -> tuple[dict[str, float], str | None]:
        """The run's thresholds (0.5 where missing) and a note saying which fell back."""
        from multimix.tasks.thresholds import read_thresholds

        return read_thresholds(Path(run), list(self.classes))

    def prediction_output(self, run, model, structures) -> PredictionOutput:
        from multimix.tasks.findings_output import FindingsOutput

        thresholds, note = self.read_thresholds(run)
        notes = [note] if note else []
        return FindingsOutput(model, list(self.classes), thresholds, structures, notes)

    def prepare_report(self, run) -> list[str]:
        """Reads the thresholds the captions and error galleries use."""
        self.thresholds, note = self.read_thresholds(run)
        return [
            "Multi-label run: the summary's AUC and F1 are the mean AUC and macro F1 over "
            "findings; captions list the findings at or above their thresholds.",
            *([note] if note else []),
        ]

    def describe(self, probs: torch.Tensor) -> str:
        return findings_text(probs, list(self.classes), getattr(self, "thresholds", {}))

    def error_groups(self, bank, preds, n: int) -> list[ErrorGroup]:
        """False positives and negatives over (image, finding) pairs, each for its finding."""
        findings, thresholds = list(self.classes), getattr(self, "thresholds", {})
        out = []
        for heading, what, rows, cols in finding_errors(bank, preds, findings, thresholds, n):
            titles = [
                f"{bank.records[r].name[:24]}  {findings[f]} {float(preds.probs[r, f]):.2f} "
                f"(threshold {thresholds.get(findings[f], 0.5):.2f})"
                for r, f in zip(rows.tolist(), cols.tolist(), strict=True)
            ]
            out.append(ErrorGroup(heading, what, rows, titles, cols, "the finding named"))
        return out

    def roc_inputs(self, bank) -> dict:
        """One ROC per finding, from the codes of the labeled images."""
        labeled = bank.labeled
        return {"labels": None, "codes": bank.targets[labeled].numpy() if labeled.any() else None}


def findings_text(probs: torch.Tensor, findings: list[str], thresholds: dict[str, float]) -> str:
    """``effusion 0.83, nodule 0.71`` (findings present, most probable first) or
    ``no finding (top: nodule 0.31)``."""
    order = torch.argsort(probs, descending=True, stable=True).tolist()
    present = [f for f in order if float(probs[f]) >= thresholds.get(findings[f], 0.5)]
    if not present:
        top = order[0]
        return f"no finding (top: {findings[top]} {float(probs[top]):.2f})"
    return ", ".join(f"{findings[f]} {float(probs[f]):.2f}" for f in present)


def finding_errors(
    bank, preds, findings: list[str], thresholds: dict[str, float], n: int = 6
) -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    """(heading, caption, rows, finding indices) of false positives (most confident first) and
    false negatives (lowest probability first), over (image, finding) pairs with certain
    labels. A false positive is a finding predicted present on an image whose certain label
    says absent; a false negative the reverse. Nothing for a source without labels."""
    if not bank.labeled.any() or not len(preds.probs):
        return []
    codes = bank.targets
    cut = torch.tensor([thresholds.get(f, 0.5) for f in findings])
    present = preds.probs >= cut[None, :]
    groups = [
        (
            "False positives",
            "Findings predicted present that the labels say are absent, most confident first.",
            (codes == NEGATIVE) & present,
            True,
        ),
        (
            "False negatives",
            "Findings the labels say are present that were predicted absent, lowest "
            "probability first.",
            (codes == POSITIVE) & ~present,
            False,
        ),
    ]
    out = []
    for heading, caption, chosen, descending in groups:
        rows, cols = torch.nonzero(chosen, as_tuple=True)
        scores = preds.probs[rows, cols]
        order = torch.argsort(scores, descending=descending, stable=True)[:n]
        out.append((heading, caption, rows[order], cols[order]))
    return out
