"""``multimix evaluate``: metrics per source of a run folder, on images it never trained on."""

from __future__ import annotations

from pathlib import Path

import torch

from multimix.core.errors import ConfigError, DataError
from multimix.data.bank import load_bank
from multimix.data.sources import Record, Source
from multimix.engine.evaluate import load_run, source_metrics
from multimix.engine.inference import predict
from multimix.models.adapt import AdaptSpec, adapt_batch_norm
from multimix.models.postprocess import apply_plan, flip_average, read_plan
from multimix.models.shift import pooled_features, read_reference, shift_score


def held_out_records(source: Source, split: dict, part: str) -> tuple[list[Record], str]:
    """Records of ``source`` that training never saw: its ``part`` of the run's split if the
    source took part in training, else all of it (a cross-domain source)."""
    info = split["sources"].get(source.name)
    if info is None or Path(info["root"]) != source.root.resolve():
        return list(source.records), "all"
    names = set(info[part])
    return [r for r in source.records if r.name in names], part


def evaluate_run(
    run: Path,
    folders: list[str],
    classes: tuple[str, ...] | None = None,
    label_map: dict[str, str] | None = None,
    part: str = "test",
    device: str = "auto",
    batch_size: int = 32,
    keep: bool = False,
    explain: list[str] | tuple[str, ...] = (),
    explain_samples: int = 32,
    on_bad_input: str = "error",
    adapt: bool | AdaptSpec = False,
    precision: str = "fp32",
) -> tuple[dict, dict]:
    """metrics.json content for ``folders``; with ``keep``, also banks and predictions.

    Under ``on_bad_input="skip"`` bad files are left out and listed in ``skipped``.

    With ``explain`` methods (see :mod:`multimix.explain`), each source's block also gets
    ``explanations``: lung share and deletion curve per method on up to ``explain_samples``
    images (:func:`~multimix.explain.report_metrics.explanation_metrics`).

    Every block gets ``shift`` (how unlike the training data the source is, when the run kept
    its feature reference; :mod:`multimix.models.shift`); masks get the run's post-processing
    (``RUN/postprocess.json``). With ``adapt``, each source is predicted by a copy of the model
    whose batch-norm statistics were re-estimated on that source's images, labels unread
    (:mod:`multimix.models.adapt`; ``True`` is the default :class:`AdaptSpec`); the block says
    so under ``adapted``.
    """
    from multimix.data.assemble import load_split
    from multimix.data.bad_inputs import BadInputs
    from multimix.data.sources import load_source
    from multimix.engine.precision import resolve_precision
    from multimix.engine.runtime import select_device
    from multimix.explain.report_metrics import check_methods, explanation_metrics

    explain = check_methods(explain)
    spec = AdaptSpec.of(adapt)
    bad = BadInputs(on_bad_input)
    dev = select_device(device)
    cfg, model = load_run(run, device=dev)
    precision = resolve_precision(precision, dev)  # the network's arithmetic; metrics in fp32
    task = cfg.make_task(classes, label_map)
    task.attach(Path(run))
    labels = task.space
    plan = read_plan(Path(run))
    reference = read_reference(Path(run))
    if len(labels.classes) != model.cfg.n_classes:
        raise ConfigError(
            f"the run was trained on {len(cfg.classes)} classes, not {len(labels.classes)}"
        )
    split = load_split(Path(run) / "split.json")
    # Read and check every folder before predicting, so a bad file stops nothing half-done.
    banks = {}
    for folder in folders:
        source = load_source(folder, bad=bad)
        if not source.records:
            continue  # skipped: no usable image
        records, used = held_out_records(source, split, part)
        if not records:
            raise DataError(source.root, f"no images left to evaluate in its {part!r} part")
        bank = load_bank(
            records, cfg.image_size, tuple(cfg.structures), labels, f"loading {source.name}", bad
        )
        if len(bank):
            banks[source.name] = (bank, used)
    if not banks:
        raise ConfigError(f"no usable images to evaluate ({len(bad)} bad inputs skipped)")
    results, kept = {}, {}
    for name, (bank, used) in banks.items():
        rows = torch.arange(len(bank))
        used_model, extra = model, {}
        if spec is not None:
            used_model, adaptation = adapt_batch_norm(model, bank.images, dev, batch_size, spec)
            extra["adapted"] = adaptation.as_json()
        if reference is not None:
            feats = pooled_features(model, bank.images, dev, batch_size)
            extra["shift"] = shift_score(feats, reference)
        preds = predict(
            used_model, bank.images, dev, batch_size, keep_saliency=keep, task=task,
            precision=precision, flip_masks=flip_average(plan),
        )  # fmt: skip
        preds.masks = apply_plan(preds.masks, plan, bank.structures)
        block = source_metrics(bank, rows, preds, labels.classes, bank.structures, task=task)
        block |= task.extra_metrics(Path(run), used_model, bank, preds, labels, dev)
        block |= extra
        if explain:
            block["explanations"] = explanation_metrics(
                model, bank, rows, explain, dev, samples=explain_samples
            )
        results[name] = {"part": used, **block}
        if keep:
            kept[name] = (bank, preds)
    metrics = {
        "run": str(run),
        "checkpoint": "best",
        "adapted": spec is not None,
        "postprocess": plan,
        "precision": precision,
        "classes": list(labels.classes),
        "sources": results,
        "skipped": bad.as_json(),
    }
    return metrics, kept
