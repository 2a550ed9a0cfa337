"""What differs between the single-label (multi-class) task and the multi-label task.

The engine asks here instead of branching on ``cfg.task`` itself: which label space reads the
labels, which method trains, which network options and which streams it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multimix.core.errors import ConfigError
from multimix.data.findings import FindingSpace
from multimix.data.labels import LabelSpace
from multimix.methods.base import CLS, SEG, Method, get_method

if TYPE_CHECKING:
    from multimix.config import TrainConfig
    from multimix.data.assemble import TrainingData
    from multimix.data.streams import Streams

TASKS = ("multiclass", "multilabel")
MULTILABEL = "multilabel"


def label_space(
    cfg: TrainConfig, classes: tuple[str, ...] | None = None, label_map: dict | None = None
) -> LabelSpace | FindingSpace:
    space = FindingSpace if cfg.task == MULTILABEL else LabelSpace
    return space(tuple(classes or cfg.classes), cfg.label_map | (label_map or {}))


def build_method(cfg: TrainConfig) -> Method:
    if cfg.task == MULTILABEL:
        from multimix.methods.multilabel import MultiLabel

        return MultiLabel(
            weights=cfg.weights, options=cfg.multilabel, semi_supervised=cfg.method == "multimix"
        )
    return get_method(cfg.method, cfg.weights)


def model_options(cfg: TrainConfig) -> dict:
    """Extra :class:`~multimix.models.net.ModelConfig` fields of the task."""
    if cfg.task != MULTILABEL:
        return {}
    return {"task": MULTILABEL, "localization": "localization" in cfg.multilabel.aux}


def make_streams(
    cfg: TrainConfig, data: TrainingData, pools: dict, method: Method, rank: int = 0
) -> Streams:
    """The task's streams; for multi-label also positive weights and the boxes to learn from."""
    from multimix.data.streams import Streams

    if cfg.task != MULTILABEL:
        return Streams(data.bank, pools, cfg.augment, cfg.seed, rank)
    from multimix.data.multilabel import (
        MultiLabelStreams,
        bank_boxes,
        bank_zone_labels,
        lung_channel,
    )
    from multimix.methods.multilabel import auto_pos_weight

    bank, space = data.bank, label_space(cfg)
    n = len(space.classes)
    if cfg.multilabel.pos_weight == "auto":
        rows = pools[CLS].rows
        method.pos_weight = auto_pos_weight(bank.targets[rows][bank.labeled[rows]])
    boxes, zone_labels = None, None
    if "localization" in cfg.multilabel.aux:
        lung = lung_channel(bank)
        roots = {name: source.root for name, source in data.sources.items()}
        boxes = bank_boxes(bank, roots, space, pools[CLS].rows)
        zone_labels = bank_zone_labels(bank, roots, space, pools[CLS].rows)
        allowed = {int(r) for r in data.rows[SEG]}  # masks within --labeled-seg
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
    return MultiLabelStreams(
        bank, pools, cfg.augment, cfg.seed, rank,
        n_findings=n, boxes=boxes, min_share=cfg.multilabel.zone_min_share,
        mask_rows=data.rows[SEG], zone_labels=zone_labels,
    )  # fmt: skip
