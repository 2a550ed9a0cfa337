"""The one typed configuration a run is built from; saved as ``config.json`` in the run folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from multimix.core.batch import PRETRAIN
from multimix.core.errors import CheckpointError, ConfigError
from multimix.data.augment import AugmentConfig
from multimix.data.bad_inputs import check_policy
from multimix.methods.base import method_class, parse_options
from multimix.models.backbones import DEFAULT_WIDTHS, backbone_class
from multimix.tasks import TASKS, Task


@dataclass
class TrainConfig:
    """Every option of ``multimix train``. The engine reads nothing else.

    The CLI generates its options from these fields (``HELP`` is their help text), so a new
    field is a new option with its default stated once, here.
    """

    HELP: ClassVar[dict[str, str]] = {
        "method": "Training method (see: multimix methods).",
        "class_data": "Folders with class labels (repeatable).",
        "seg_data": "Folders with masks (repeatable).",
        "unlabeled_data": "Folders of images without labels (repeatable).",
        "pretrain_masks": "Pre-train segmentation on these pseudo-mask folders first.",
        "pretrain_fraction": "Share of the budget spent pre-training on them.",
        "labeled_class": "Class labels to use; all: every one in the training part.",
        "labeled_seg": "Masks to use; all: every one in the training part.",
        "classes": "Class (or finding) names.",
        "label_map": "Map a source's label onto a class: covid=pneumonia,...",
        "structures": "Mask structures; none: the ones found in the --seg-data folders.",
        "steps": "Training steps (500 when neither this nor --max-minutes is given).",
        "max_minutes": "Time budget in minutes.",
        "clock": "What --max-minutes counts: wall time, or cpu time this process used.",
        "device": "auto, cpu, cuda or cuda:N.",
        "precision": "auto (bf16 where the hardware runs it faster), fp32 or bf16.",
        "widths": "Encoder channel widths per level.",
        "backbone": "Encoder (see: multimix backbones).",
        "task": "multiclass or multilabel (see: multimix tasks).",
        "on_bad_input": "A bad image, mask or label row: error, or skip (RUN/skipped.csv).",
        "threads": "CPU threads (none: all cores).",
        "unlabeled_ratio": "Unlabeled images per labeled image in a step.",
        "unlabeled_sampling": "How unlabeled batches are drawn: image (every image equally "
        "often) or source (every source an equal share of each batch).",
        "weight_ema": "Validate and keep a moving average of the weights with this decay "
        "(0: the weights of each step).",
    }

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
    structures: list[str] = field(default_factory=list)  # empty: found in the seg folders
    image_size: int = 128
    steps: int | None = None
    max_minutes: float | None = None
    clock: str = "wall"  # "cpu": process CPU time, so a budget holds on a shared machine
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # network arithmetic: auto, fp32 or bf16 (engine.precision)
    batch_size: int = 8
    unlabeled_ratio: int = 1
    unlabeled_sampling: str = "image"  # "source": data.streams.SourcePool
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    val_every: int = 50
    widths: list[int] = field(default_factory=lambda: list(DEFAULT_WIDTHS))
    norm: str = "batch"
    backbone: str = "unet"  # the encoder, by its name in multimix.models.backbones
    dropout: float = 0.2
    weight_ema: float = 0.0  # models.average.WeightAverage: the run keeps averaged weights
    threads: int | None = None
    on_bad_input: str = "error"  # "skip": leave bad files out, listed in RUN/skipped.csv
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    task: str = "multiclass"  # or "multilabel" (classes are then findings); see multimix tasks
    # The chosen method's and task's own options (their Options dataclasses), by field name.
    method_options: dict = field(default_factory=dict)
    task_options: dict = field(default_factory=dict)

    def make_task(self, classes: tuple[str, ...] | None = None, label_map: dict | None = None):
        """The run's task object (its options parsed and checked)."""
        cls = TASKS.get(self.task)
        options = parse_options(cls.Options, self.task_options, f"task {self.task!r}")
        return cls(tuple(classes or self.classes), self.label_map | (label_map or {}), options)

    def data_folders(self) -> dict[str, list[str]]:
        """The run's folders by role (``data.assemble.load_sources`` reads them)."""
        return {
            "class": self.class_data,
            "seg": self.seg_data,
            "unlabeled": self.unlabeled_data,
            PRETRAIN: self.pretrain_masks,
        }

    def make_method(self, task: Task):
        """The run's method object for ``task``."""
        return method_class(self.method, self.task)(self.method_options, task)

    def validate(self) -> None:
        if not (self.class_data or self.seg_data):
            raise ConfigError("give at least one --class-data or --seg-data folder")
        self._validate_task()
        if not self.widths or min(self.widths) < 1:
            raise ConfigError(f"--widths must be positive numbers, not {self.widths}")
        if self.steps is None and self.max_minutes is None:
            self.steps = 500
        if self.steps is not None and self.steps < 1:
            raise ConfigError("--steps must be at least 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError("--max-minutes must be positive")
        if self.clock not in ("wall", "cpu"):
            raise ConfigError(f"--clock must be wall or cpu, not {self.clock!r}")
        if self.unlabeled_sampling not in ("image", "source"):
            raise ConfigError(
                f"--unlabeled-sampling must be image or source, not {self.unlabeled_sampling!r}"
            )
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
        if not 0.0 <= self.weight_ema < 1.0:
            raise ConfigError(f"--weight-ema must lie in [0, 1), not {self.weight_ema}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"unknown --precision {self.precision!r}; use auto, fp32 or bf16")
        check_policy(self.on_bad_input)
        backbone_class(self.backbone)  # unknown: a ConfigError naming the registered ones

    def _validate_task(self) -> None:
        """The task and method exist and fit together, their options parse, and the folders
        can train the task."""
        task = self.make_task()
        self.make_method(task)
        task.space  # noqa: B018 (the label space checks the classes)
        task.check_data(self.class_data, self.seg_data)

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
            # Runs saved before method and task options existed kept them as "weights" and
            # "multilabel" (which then also held the task's options).
            if "weights" in raw and "method_options" not in raw:
                raw["method_options"] = raw["weights"]
            if raw.get("task") == "multilabel" and "task_options" not in raw:
                raw["task_options"] = raw.get("multilabel", {})
            raw = {k: v for k, v in raw.items() if k in known}
            augment = dict(raw.get("augment", {}))
            # Saved before the weak zoom existed (every other field is there): trained without.
            before_zoom = {f.name for f in fields(AugmentConfig)} - {"max_scale"}
            if augment.keys() >= before_zoom and "max_scale" not in augment:
                augment["max_scale"] = 0.0
            raw["augment"] = AugmentConfig(**augment)
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(path, f"unreadable run configuration ({exc})") from None
