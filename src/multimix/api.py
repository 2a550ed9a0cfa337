"""The Python API: load a trained run once, predict on images, get a typed result.

Three lines in a notebook::

    import multimix.api as mm
    model = mm.load("RUN")                       # the best checkpoint; "last" also works
    result = model.predict("scan.dcm", explain="gradcam")
    result.probabilities, result.predicted, result.masks["lungs"], result.to_json()

``multimix predict``, ``multimix serve`` and ``predict --backend onnx`` all go through
:class:`Model`, so a prediction is made one way only: the image read into the library's gray
``[0, 1]`` array, resized to the run's size, the network (or the exported ONNX file) run on the
batch, the task (:mod:`multimix.tasks`) turning logits into what is predicted (the most probable
class, or the findings at their thresholds), the masks and maps brought back to the input's own
size.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from multimix.core.errors import ConfigError, DataError
from multimix.models.adapt import AdaptSpec, adapt_batch_norm

__all__ = [
    "BACKENDS",
    "CHECKPOINTS",
    "EXPLAIN_METHODS",
    "Model",
    "Prediction",
    "load",
    "png_bytes",
    "read_input",
    "training_summary",
]

CHECKPOINTS = ("best", "last")
BACKENDS = ("torch", "onnx")
EXPLAIN_METHODS = ("saliency", "gradcam", "ig")
MASK_THRESHOLD = 0.5  # a pixel is in a structure where its mask probability reaches this
DEFAULT_ONNX = "model.onnx"  # where ``multimix export`` writes by default: RUN/model.onnx


@dataclass
class Prediction:
    """What the run says about one image; arrays are at the input image's own size.

    ``probabilities`` name every class (or finding); ``predicted`` is what the image is called
    (one class, or the findings at or above ``thresholds``; empty: no finding); ``label`` the
    one-line caption the overlay shows. ``masks`` hold one bool mask per segmented structure,
    ``area_fractions`` their share of the image; ``lung_area_fraction`` is the lungs' (None
    when the run does not segment lungs). ``explanations[method][class]`` is a float map in
    ``[0, 1]`` for each class explained (the predicted class; for a multi-label run each
    finding present, else the most probable). ``extra`` holds task-specific columns (``zones``
    of a run with a localization head).
    """

    name: str
    task: str
    classes: list[str]
    probabilities: dict[str, float]
    predicted: list[str]
    label: str
    shape: tuple[int, int]
    masks: dict[str, np.ndarray]
    area_fractions: dict[str, float]
    lung_area_fraction: float | None
    thresholds: dict[str, float] | None = None
    explanations: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    region: str | None = None  # a method's region (kacl's CAM region): its name
    region_mask: np.ndarray | None = field(default=None, repr=False)  # bool at the input size
    region_values: dict[str, float] = field(default_factory=dict)  # what the method read there
    cells: list[str] = field(default_factory=list, repr=False)  # predictions.csv cells
    trailing: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON types (arrays left out; see ``png_bytes`` for them)."""
        return {
            "name": self.name,
            "task": self.task,
            "predicted": list(self.predicted),
            "label": self.label,
            "probabilities": {k: round(float(v), 6) for k, v in self.probabilities.items()},
            "thresholds": None
            if self.thresholds is None
            else {k: round(float(v), 6) for k, v in self.thresholds.items()},
            "height": int(self.shape[0]),
            "width": int(self.shape[1]),
            "lung_area_fraction": None
            if self.lung_area_fraction is None
            else round(self.lung_area_fraction, 6),
            "area_fractions": {k: round(v, 6) for k, v in self.area_fractions.items()},
            "explained": {m: sorted(maps) for m, maps in self.explanations.items()},
            **({"extra": dict(self.extra)} if self.extra else {}),
            **(
                {
                    "region": {
                        "name": self.region,
                        "area_fraction": round(float(self.region_mask.mean()), 6)
                        if self.region_mask is not None
                        else None,
                        "values": {k: float(v) for k, v in self.region_values.items()},
                    }
                }
                if self.region
                else {}
            ),
        }

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    @property
    def mask(self) -> np.ndarray | None:
        """The lungs' mask if segmented, else the first structure's (None: no segmentation)."""
        if "lungs" in self.masks:
            return self.masks["lungs"]
        return next(iter(self.masks.values()), None)


def png_bytes(array: np.ndarray) -> bytes:
    """A bool, uint8 or ``[0, 1]`` float 2-D array (or uint8 RGB) as PNG file bytes."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * np.uint8(255)
    elif arr.dtype != np.uint8:
        arr = np.rint(np.clip(arr, 0.0, 1.0) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def read_input(x: Any, name: str | None = None) -> tuple[np.ndarray, str]:
    """``(gray float32 H x W in [0, 1], name)`` of a path, bytes, PIL image, numpy array or
    pydicom Dataset, each read the way ``multimix predict`` reads files.

    Raises:
        DataError: the input cannot be read as an image (one line naming it).
    """
    from pydicom.dataset import Dataset

    from multimix.data.io import (
        image_from_array,
        image_from_dataset,
        image_from_pil,
        image_stem,
        read_image,
        read_image_bytes,
    )

    if isinstance(x, (str, Path)):
        return read_image(x), name or image_stem(x)
    if isinstance(x, (bytes, bytearray, memoryview)):
        label = name or "upload"
        return read_image_bytes(bytes(x), label), label
    if isinstance(x, Image.Image):
        label = name or "image"
        return image_from_pil(x, label), label
    if isinstance(x, Dataset):
        label = name or str(x.get("SOPInstanceUID", "") or "dataset")
        return image_from_dataset(x, label), label
    if isinstance(x, np.ndarray):
        label = name or "array"
        return image_from_array(x, label), label
    raise DataError(
        name or type(x).__name__,
        "give a path, bytes, a PIL image, a numpy array or a pydicom Dataset",
    )


def _methods(explain: str | Sequence[str] | None) -> list[str]:
    if explain is None:
        return []
    items = explain.split(",") if isinstance(explain, str) else list(explain)
    methods = list(dict.fromkeys(m.strip() for m in items if m and m.strip()))
    unknown = [m for m in methods if m not in EXPLAIN_METHODS]
    if unknown:
        raise ConfigError(
            f"unknown explanation method {unknown[0]!r}; choose from {', '.join(EXPLAIN_METHODS)}"
        )
    return methods


def _upsample(channel_map: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """A ``(1, h, w)`` map resized bilinearly to ``shape`` as a float32 array."""
    up = F.interpolate(channel_map[None].float(), size=shape, mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


class Model:
    """A trained run, loaded once, ready to predict (``load`` makes one).

    ``backend="onnx"`` runs the classifier and segmentation from the exported file
    (``multimix export``, ``RUN/model.onnx`` by default) with onnxruntime; the run folder still
    gives the classes, thresholds and image size. Explanation maps need the torch backend:
    Grad-CAM and integrated gradients differentiate the network, which an ONNX file cannot.
    """

    def __init__(
        self,
        run: str | Path,
        checkpoint: str = "best",
        device: str = "auto",
        backend: str = "torch",
        onnx_path: str | Path | None = None,
        precision: str = "fp32",
    ) -> None:
        from multimix.engine.evaluate import load_run
        from multimix.engine.precision import resolve_precision
        from multimix.engine.runtime import select_device
        from multimix.models.postprocess import read_plan
        from multimix.pipelines.regions import RegionOutput
        from multimix.tasks.base import task_of_run

        if checkpoint not in CHECKPOINTS:
            raise ConfigError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}")
        if backend not in BACKENDS:
            raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}")
        self.run = Path(run)
        self.checkpoint = checkpoint
        self.backend = backend
        self.device = select_device(device) if backend == "torch" else torch.device("cpu")
        self.cfg, self.net = load_run(self.run, checkpoint, device=self.device)
        self.net.eval()
        self.classes = list(self.cfg.classes)
        self.structures = list(self.cfg.structures)
        self.image_size = int(self.cfg.image_size)
        self.task = task_of_run(self.cfg)
        self.task.attach(self.run)  # what training chose after the fact (a temperature, ...)
        self.output = self.task.prediction_output(self.run, self.net, self.structures)
        self.notes: list[str] = list(self.output.notes)
        self.plan = read_plan(self.run)  # the masks' post-processing chosen after training
        self.precision = resolve_precision(precision, self.device)
        self.session = None
        self.onnx_path: Path | None = None
        if backend == "onnx":
            self.onnx_path = Path(onnx_path) if onnx_path else self.run / DEFAULT_ONNX
            self.session = _onnx_session(self.onnx_path)
            self.regions = RegionOutput(None)  # a method's regions need the network
        else:
            self.regions = RegionOutput.of_run(self.cfg, self.task)
            self._refold()

    def _refold(self) -> None:
        from multimix.engine.precision import precision_dtype
        from multimix.models.fusion import inference_network

        self.fast = inference_network(self.net, precision_dtype(self.precision))

    def prepare(self, images: Sequence[np.ndarray], adapt: bool | AdaptSpec = False) -> list[str]:
        """Look at the images to be predicted before predicting them; notes back.

        A run that kept a feature reference warns when they are unlike its training data
        (``models.shift``); with ``adapt`` the batch-norm statistics are re-estimated on them
        (``models.adapt``, no labels; ``True`` is the default :class:`AdaptSpec`) and the model
        predicts with those from then on.
        """
        from multimix.data.io import stored_image
        from multimix.models.shift import pooled_features, read_reference, shift_score

        if adapt and self.backend != "torch":
            raise ConfigError("--adapt needs --backend torch: it re-fits the network's batch norm")
        reference = read_reference(self.run)
        if (not adapt and reference is None) or not images:
            return []
        size = self.image_size  # uint8 levels, as the bank holds them: what both calls take
        x = torch.stack([torch.from_numpy(stored_image(img, size)) for img in images])[:, None]
        notes = []
        if reference is not None and len(x) >= 2:
            shift = shift_score(pooled_features(self.net, x, self.device), reference)
            if shift["warning"]:
                notes.append(
                    f"these images are unlike the training data ({shift['outside_share']:.0%} "
                    "lie outside the range of its validation images): check the results"
                    + ("" if adapt else ", or try --adapt")
                )
        if adapt:
            spec = AdaptSpec.of(adapt)
            self.net, adaptation = adapt_batch_norm(self.net, x, self.device, spec=spec)
            self.net.eval()
            self._refold()
            notes.append(adaptation.describe())
        return notes

    @property
    def thresholds(self) -> dict[str, float] | None:
        return self.output.thresholds

    def info(self) -> dict[str, Any]:
        """What the run is: task, classes, image size, structures, and its training data
        (sources and their roles, labeled counts, split sizes, last validation score)."""
        return {
            "run": self.run.name,
            "checkpoint": self.checkpoint,
            "backend": self.backend,
            "task": self.cfg.task,
            "method": self.cfg.method,
            "classes": list(self.classes),
            "thresholds": self.thresholds,
            "structures": list(self.structures),
            "image_size": self.image_size,
            "backbone": self.cfg.backbone,
            "explain_methods": list(EXPLAIN_METHODS) if self.backend == "torch" else [],
            "training": training_summary(self.run, self.cfg),
            "notes": list(self.notes),
        }

    # -- prediction -------------------------------------------------------------------------
    def predict(
        self, x: Any, explain: str | Sequence[str] | None = None, name: str | None = None
    ) -> Prediction:
        """One image (path, bytes, PIL image, numpy array or pydicom Dataset).

        ``explain``: ``"saliency"``, ``"gradcam"``, ``"ig"``, several (a list or
        ``"saliency,ig"``), or None.
        """
        image, label = read_input(x, name)
        return self.predict_images([image], explain, [label])[0]

    def predict_images(
        self,
        images: Sequence[np.ndarray],
        explain: str | Sequence[str] | None = None,
        names: Sequence[str] | None = None,
    ) -> list[Prediction]:
        """A batch of images already read: gray ``H x W`` arrays, float in ``[0, 1]`` or uint8
        (read as :func:`multimix.data.io.image_from_array` reads them, so a uint8 array is
        scaled rather than clipped, and a float outside ``[0, 1]`` is a one-line error)."""
        from multimix.data.io import image_from_array, resize_image

        methods = _methods(explain)
        if methods and self.backend != "torch":
            raise ConfigError(
                "explanation maps need --backend torch: the ONNX file holds the forward pass "
                "only (Grad-CAM and IG differentiate the network)"
            )
        if not images:
            return []
        names = list(names) if names is not None else [f"image-{i}" for i in range(len(images))]
        images = [image_from_array(img, name) for img, name in zip(images, names, strict=True)]
        size = self.image_size
        x = torch.stack([torch.from_numpy(resize_image(img, size)) for img in images])[:, None]
        from multimix.models.postprocess import apply_plan, flip_average
        from multimix.pipelines.regions import region_at

        result = self._forward(x)
        mask_probs = torch.sigmoid(result["mask_logits"].float()).cpu()
        if flip_average(self.plan) and mask_probs.numel():  # as evaluate does (run_model)
            mirrored = torch.sigmoid(self._forward(x.flip(-1))["mask_logits"].float()).cpu()
            mask_probs = (mask_probs + mirrored.flip(-1)) / 2
        mask_probs = apply_plan(mask_probs, self.plan, self.structures)
        probs = self.task.probabilities(result["logits"]).cpu()
        decided = self.output.batch(probs, result, mask_probs)
        maps = {m: self._explain(x, decided.pairs, m) for m in methods}
        found = self.regions.batch(self.net, x.to(self.device)) if self.session is None else None
        trailing_names = self.output.trailing_header()
        out = []
        for i, image in enumerate(images):
            shape = (int(image.shape[0]), int(image.shape[1]))
            masks = {
                s: _upsample(mask_probs[i, k : k + 1], shape) >= MASK_THRESHOLD
                for k, s in enumerate(self.structures)
            }
            areas = {s: float(m.mean()) for s, m in masks.items()}
            explanations: dict[str, dict[str, np.ndarray]] = {}
            for method, attrs in maps.items():
                for k, (row, cls) in enumerate(decided.pairs):
                    if row != i:
                        continue
                    target = decided.predicted[i][0] if cls is None else self.classes[cls]
                    heat = np.clip(_upsample(attrs[k], shape), 0.0, 1.0)
                    explanations.setdefault(method, {})[target] = heat
            out.append(
                Prediction(
                    name=names[i],
                    task=self.cfg.task,
                    classes=list(self.classes),
                    probabilities=dict(zip(self.classes, probs[i].tolist(), strict=True)),
                    predicted=list(decided.predicted[i]),
                    label=decided.captions[i],
                    shape=shape,
                    masks=masks,
                    area_fractions=areas,
                    lung_area_fraction=areas.get("lungs"),
                    thresholds=None if self.thresholds is None else dict(self.thresholds),
                    explanations=explanations,
                    extra=dict(zip(trailing_names, decided.trailing[i], strict=True)),
                    region=found.name if found is not None else None,
                    region_mask=region_at(found.masks[i], shape) if found is not None else None,
                    region_values=dict(found.values[i]) if found is not None else {},
                    cells=list(decided.cells[i]),
                    trailing=list(decided.trailing[i]),
                )
            )
        return out

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """logits, mask_logits (and activation_maps, saliency where the model gives them)."""
        if self.session is not None:
            names = [o.name for o in self.session.get_outputs()]
            values = self.session.run(None, {"image": x.numpy().astype(np.float32)})
            return {n: torch.from_numpy(v) for n, v in zip(names, values, strict=True)}
        from multimix.engine.precision import precision_context
        from multimix.models.inference import forward_in_chunks

        xd = x.to(self.device).contiguous(memory_format=torch.channels_last)
        with precision_context(self.precision, self.device):  # the network only
            out = forward_in_chunks(self.fast, xd)
        return {k: v.detach().float().cpu() for k, v in out.items()}

    def _explain(self, x: torch.Tensor, pairs: list, method: str) -> list[torch.Tensor]:
        """One map per (image, class) pair: the predicted class when the pair names none (the
        whole batch at once), else that class's own logit."""
        from multimix.explain.attributions import explain as explain_map

        x = x.to(self.device)
        if not pairs:
            return []
        if all(cls is None for _, cls in pairs):
            maps = explain_map(self.net, x, method).cpu()
            return [maps[i] for i, _ in pairs]
        rows = torch.tensor([i for i, _ in pairs], device=x.device)
        target = torch.tensor([cls for _, cls in pairs], device=x.device)
        maps = explain_map(self.net, x[rows], method, target=target).cpu()
        return [maps[k] for k in range(len(pairs))]


def training_summary(run: Path, cfg: Any) -> dict[str, Any]:
    """The data a run learnt from, from its ``config.json``, ``split.json`` and
    ``val_log.csv``: per source its roles and image counts per split part, the labeled
    budgets, steps, and the last validation row (what the best checkpoint was chosen on)."""
    import csv

    sources: dict[str, Any] = {}
    try:
        split = json.loads((Path(run) / "split.json").read_text())
        for name, info in split.get("sources", {}).items():
            sources[name] = {
                "roles": list(info.get("roles", [])),
                **{part: len(info.get(part) or []) for part in ("train", "val", "test")},
            }
    except (OSError, ValueError, AttributeError):
        pass  # a run folder copied without its split: the summary says less
    last_val: dict[str, str] = {}
    try:
        with (Path(run) / "val_log.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        last_val = dict(rows[-1]) if rows else {}
    except (OSError, csv.Error):
        pass
    return {
        "method": cfg.method,
        "sources": sources,
        "labeled_class": cfg.labeled_class,
        "labeled_seg": cfg.labeled_seg,
        "steps": cfg.steps,
        "seed": cfg.seed,
        "last_validation": last_val,
    }


def _onnx_session(path: Path):
    """An onnxruntime CPU session on ``path``; a missing or foreign file is one line."""
    if not path.is_file():
        raise ConfigError(f"{path}: no ONNX file; write one with `multimix export RUN --out FILE`")
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("--backend onnx needs the onnxruntime package") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DataError(path, f"not a readable ONNX model ({reason})") from None


def load(
    run: str | Path,
    checkpoint: str = "best",
    device: str = "auto",
    backend: str = "torch",
    onnx_path: str | Path | None = None,
    precision: str = "fp32",
) -> Model:
    """The run in folder ``run`` (``best`` or ``last`` checkpoint), loaded once.

    Raises:
        CheckpointError: the run folder or its checkpoint cannot be loaded.
        ConfigError: an unknown checkpoint or backend, or a missing ONNX file.
    """
    return Model(run, checkpoint, device, backend, onnx_path, precision)
