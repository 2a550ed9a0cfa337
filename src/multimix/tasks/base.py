"""The task protocol and its registry."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from multimix.core.registry import Registry

if TYPE_CHECKING:
    import numpy as np

    from multimix.data.bank import Bank
    from multimix.models.inference import Predictions
    from multimix.models.net import MultiMixNet


@dataclass
class NoOptions:
    """A task without options of its own."""

    def validate(self) -> None:
        """Nothing to check."""


class Task:
    """One kind of label. Subclasses set ``name``, ``description`` and ``Options``."""

    name: ClassVar[str] = "task"
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    # The kind of targets and losses it offers methods; methods register per family, so a task
    # that subclasses MultiClass trains with every multi-class method.
    family: ClassVar[str] = ""

    def __init__(
        self,
        classes: tuple[str, ...],
        label_map: dict[str, str] | None = None,
        options: Any = None,
    ) -> None:
        self.classes = tuple(classes)
        self.label_map = dict(label_map or {})
        self.options = options if options is not None else self.Options()

    # -- training side: label space, targets, heads, maps warped with views, losses ---------
    def make_space(self) -> Any:
        """The label space that reads raw labels into bank targets (``encode``, ``stratum``)."""
        raise NotImplementedError

    @functools.cached_property
    def space(self) -> Any:
        """The label space, made once."""
        return self.make_space()

    def check_data(self, class_data: list[str], seg_data: list[str]) -> None:
        """A one-line error when the run's folders cannot train this task."""

    def model_options(self) -> dict:
        """Extra :class:`~multimix.models.net.ModelConfig` fields (task name, heads)."""
        return {"task": self.name}

    def prepare(self, bank: Any, rows: dict, roots: dict) -> Any:
        """Once before training, from the training bank: statistics the loss needs, and the
        :class:`~multimix.data.streams.LabelMaps` a labeled stream warps with its views (or
        None)."""
        return None

    def supervised_loss(self, logits: Any, targets: Any) -> tuple[Any, dict[str, float]]:
        """The loss on labeled images and the numbers worth logging."""
        raise NotImplementedError

    def pseudo_label_loss(self, weak: Any, strong: Any, threshold: float) -> tuple[Any, Any]:
        """FixMatch's loss for this kind of label, and which pseudo-labels were kept."""
        raise NotImplementedError

    def localization_loss(self, model: Any, feats: list, extras: dict) -> Any:
        """A loss on the task's localization head, or None when it has none."""
        return None

    # -- evaluation and prediction side: probabilities, metrics, columns, captions, report ---
    # The key of the task's block in a source's metrics (``classification``, ``multilabel``).
    metric_key: ClassVar[str] = ""
    # Whether the report's error galleries explain, per entry, the class in error (so maps kept
    # with the predictions, which explain the top class, cannot stand in for them).
    explains_class_in_error: ClassVar[bool] = False

    def option(self, name: str, default: Any) -> Any:
        """One task option, from the options object or a plain dict (the new config)."""
        if isinstance(self.options, dict):
            return self.options.get(name, default)
        return getattr(self.options, name, default)

    def attach(self, run: Path) -> None:
        """Read what :meth:`after_training` wrote into ``run`` (a temperature, ...), so that
        evaluation and prediction use it; nothing by default."""

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, C) logits -> (B, C) float probabilities (softmax, sigmoids, ...)."""
        raise NotImplementedError

    def keeps_activation_maps(self, model: MultiMixNet) -> bool:
        """Whether inference keeps the per-class activation maps (``Predictions.maps``)."""
        return model.localizer is not None

    def metric_block(self, bank: Bank, rows: torch.Tensor, preds: Predictions) -> dict | None:
        """The task's metrics block (under ``metric_key``) for ``rows`` of ``bank``; ``preds``
        are of those rows. None when none of them is labeled."""
        raise NotImplementedError

    def summary(self, block: dict) -> dict:
        """``{"accuracy", "auc", "f1_macro"}`` (None where it has none) of the task's block:
        the CLI's one-line summary of a source."""
        raise NotImplementedError

    def score_parts(self, block: dict) -> list[float]:
        """The numbers of the task's block that enter the validation score (best checkpoint)."""
        raise NotImplementedError

    def extra_metrics(
        self,
        run: Path,
        model: MultiMixNet,
        bank: Bank,
        preds: Predictions,
        space: Any,
        device: torch.device,
    ) -> dict:
        """Blocks ``evaluate`` adds on a source beyond :meth:`metric_block` (which they may
        replace, e.g. thresholded), given the run and the label space the bank was read with."""
        return {}

    def after_training(
        self,
        run: Path,
        model: MultiMixNet,
        bank: Bank | None,
        val_rows: torch.Tensor,
        device: torch.device,
    ) -> None:
        """A step after training with the best checkpoint ``model`` and the validation
        ``val_rows`` of ``bank`` (e.g. choosing thresholds into the run folder)."""

    def prediction_output(
        self, run: Path, model: MultiMixNet, structures: tuple[str, ...] | list[str]
    ) -> PredictionOutput:
        """What ``predict`` writes per image for this run: columns, captions, map targets."""
        raise NotImplementedError

    def prepare_report(self, run: Path) -> list[str]:
        """Read what the report needs from the run (e.g. its thresholds); notes back."""
        return []

    def describe(self, probs: torch.Tensor) -> str:
        """One image's prediction in a gallery title (``pneumonia 0.91``)."""
        raise NotImplementedError

    def error_groups(self, bank: Bank, preds: Predictions, n: int) -> list[ErrorGroup]:
        """The report's error galleries of a source (nothing without labels)."""
        raise NotImplementedError

    def roc_inputs(self, bank: Bank) -> dict[str, np.ndarray | None]:
        """``labels`` (class indices) or ``codes`` (finding codes) of the labeled images, for
        :class:`~multimix.report.html.SourceScores`'s ROC curves."""
        raise NotImplementedError


@dataclass
class ErrorGroup:
    """One error gallery: its heading and caption, the rows of the bank it shows (in order),
    their titles, and per row the class whose map explains it (None: the predicted class)."""

    heading: str
    caption: str
    rows: torch.Tensor
    titles: list[str]
    targets: torch.Tensor | None = None
    map_of: str = "the predicted class"  # "Right of each image: its <method> map for ..."


@dataclass
class BatchOutput:
    """What ``predict`` writes for one batch: per image the CSV cells after ``image``, the
    overlay caption and the cells after the mask columns; the (image, class or None) pairs to
    explain (None: the predicted class; a class: its maps go to a folder of its name).
    ``predicted``: per image what it is called, as class names (the one class, or the findings
    present; empty: no finding), for the Python API and the service."""

    cells: list[list[str]]
    captions: list[str]
    trailing: list[list[str]]
    pairs: list[tuple[int, int | None]] = field(default_factory=list)
    predicted: list[list[str]] = field(default_factory=list)


class PredictionOutput:
    """Columns and captions of ``predict`` for one run; ``notes`` are printed to the user.

    ``thresholds``: the probability at or above which each class is called present (a
    multi-label run's), or None where the prediction is the most probable class."""

    notes: list[str]
    thresholds: dict[str, float] | None = None

    def header(self) -> list[str]:
        """Columns after ``image`` and before the mask columns."""
        raise NotImplementedError

    def trailing_header(self) -> list[str]:
        """Columns after the mask columns."""
        return []

    def explain_folders(self, methods: list[str]) -> list[str]:
        """Folders (relative to the output) the explanation maps go to."""
        return [f"explanations/{m}" for m in methods]

    def batch(
        self, probs: torch.Tensor, outputs: dict[str, torch.Tensor], mask_probs: torch.Tensor
    ) -> BatchOutput:
        """``probs`` (B, C), the model's ``outputs`` and the (B, K, S, S) mask probabilities."""
        raise NotImplementedError


TASKS: Registry[type[Task]] = Registry("task", "multimix.tasks")


def get_task(
    name: str, classes: tuple[str, ...], label_map: dict | None = None, options: Any = None
) -> Task:
    return TASKS.get(name)(classes, label_map, options)


# -- evaluation and prediction side ----------------------------------------------------------


def task_of_run(
    cfg: Any, classes: tuple[str, ...] | None = None, label_map: dict | None = None
) -> Task:
    """The task of a run, from its :class:`~multimix.config.TrainConfig` (``classes`` and
    ``label_map`` as ``evaluate`` may override them)."""
    return cfg.make_task(classes, label_map)


def task_for_model(
    model: MultiMixNet, classes: tuple[str, ...] | None = None, options: Any = None
) -> Task:
    """The task a network was trained for (its ``cfg.task``); classes default to numbers."""
    names = tuple(classes) if classes else tuple(str(k) for k in range(model.cfg.n_classes))
    return get_task(model.cfg.task, names, None, options)


def task_of_block(block: dict) -> tuple[Task, dict] | None:
    """The task whose metrics block a source's metrics hold, and that block (None: none)."""
    for _, kind in TASKS.items():
        if kind.metric_key and block.get(kind.metric_key):
            return kind(()), block[kind.metric_key]
    return None
