"""The one typed configuration a run is built from; saved as ``config.json`` in the run folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from multimix.core.errors import CheckpointError, ConfigError
from multimix.data.augment import AugmentConfig
from multimix.data.bad_inputs import check_policy
from multimix.methods.base import LossWeights
from multimix.methods.multilabel import MultiLabelOptions
from multimix.models.backbones import backbone_class


@dataclass
class TrainConfig:
    """Every option of ``multimix train``. The engine reads nothing else."""

    out: str
    method: str = "multimix"
    class_data: list[str] = field(default_factory=list)
    seg_data: list[str] = field(default_factory=list)
    unlabeled_data: list[str] = field(default_factory=list)
    pretrain_masks: list[str] = field(default_factory=list)  # pseudo-mask folders (DoLL)
    pretrain_fraction: float = 0.3  # share of the budget spent pre-training on them
    labeled_class: int | None = None  # None: every class label in the training part
    labeled_seg: int | None = None  # None: every mask in the training part
    classes: list[str] = field(default_factory=lambda: ["normal", "pneumonia"])
    label_map: dict[str, str] = field(default_factory=dict)
    structures: list[str] = field(default_factory=lambda: ["lungs"])
    image_size: int = 128
    steps: int | None = None
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    batch_size: int = 8
    unlabeled_ratio: int = 1
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    val_every: int = 50
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    norm: str = "batch"
    backbone: str = "unet"  # the encoder, by its name in multimix.models.backbones
    dropout: float = 0.2
    threads: int | None = None
    on_bad_input: str = "error"  # "skip": leave bad files out, listed in RUN/skipped.csv
    weights: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    task: str = "multiclass"  # or "multilabel" (classes are then findings)
    multilabel: MultiLabelOptions = field(default_factory=MultiLabelOptions)

    def validate(self) -> None:
        if not (self.class_data or self.seg_data):
            raise ConfigError("give at least one --class-data or --seg-data folder")
        self._validate_task()
        if self.steps is None and self.max_minutes is None:
            self.steps = 500
        if self.steps is not None and self.steps < 1:
            raise ConfigError("--steps must be at least 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError("--max-minutes must be positive")
        if self.image_size < 2 ** (len(self.widths) - 1) or self.image_size % 2 ** (
            len(self.widths) - 1
        ):
            raise ConfigError(
                f"--image-size must be a multiple of {2 ** (len(self.widths) - 1)} "
                f"for a {len(self.widths)}-level network"
            )
        for name in ("labeled_class", "labeled_seg"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0 or 'all'")
        if self.pretrain_masks and not 0 < self.pretrain_fraction < 1:
            raise ConfigError("--pretrain-fraction must lie in (0, 1)")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.test_fraction < 1:
            raise ConfigError("--val-fraction and --test-fraction must lie in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("--val-fraction plus --test-fraction must leave images to train on")
        check_policy(self.on_bad_input)
        backbone_class(self.backbone)  # unknown: a ConfigError naming the registered ones

    def _validate_task(self) -> None:
        """``--task multilabel`` trains with ``--method multilabel`` (supervised) or
        ``multimix`` (adds per-finding pseudo-labels on unlabeled images); its auxiliary
        segmentation needs masks."""
        if self.task not in ("multiclass", "multilabel"):
            raise ConfigError(f"--task must be multiclass or multilabel, not {self.task!r}")
        if self.task == "multiclass":
            if self.method == "multilabel":
                raise ConfigError("--method multilabel needs --task multilabel")
            return
        if self.method not in ("multimix", "multilabel"):
            raise ConfigError(
                f"--task multilabel trains with --method multilabel or multimix, not {self.method}"
            )
        self.multilabel.validate()
        if not self.class_data:
            raise ConfigError("--task multilabel needs --class-data folders with finding labels")
        if "segmentation" in self.multilabel.aux and not self.seg_data:
            raise ConfigError("--aux segmentation needs --seg-data folders with masks")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, run: Path) -> None:
        from multimix.core.atomic import atomic_write_text

        atomic_write_text(run / "config.json", self.to_json())

    @classmethod
    def load(cls, run: Path) -> TrainConfig:
        path = Path(run) / "config.json"
        if not path.exists():
            raise CheckpointError(run, "not a multimix run folder (no config.json)")
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: Path) -> TrainConfig:
        """A configuration saved by a run (or written by hand in the same JSON form)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: configuration file not found")
        try:
            raw = json.loads(path.read_text())
            known = {f.name for f in fields(cls)}
            raw = {k: v for k, v in raw.items() if k in known}
            raw["weights"] = LossWeights(**raw.get("weights", {}))
            raw["augment"] = AugmentConfig(**raw.get("augment", {}))
            raw["multilabel"] = MultiLabelOptions(**raw.get("multilabel", {}))
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(path, f"unreadable run configuration ({exc})") from None
