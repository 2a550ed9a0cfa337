"""What a finished run learns from its own data after training, with the best checkpoint.

Both steps read images already in memory and write one small JSON into the run folder, so
``evaluate``, ``predict`` and the report apply the same decisions:

* ``postprocess.json``: whether averaging each mask with the mirrored image's raises the
  validation Dice, and per structure whether keeping the largest components (as many as the
  training masks typically have) and filling holes does;
* ``shift_reference.json`` and ``.safetensors``: per training source, its images' feature
  mean and inverse covariance and its validation images' distances; a new folder is measured
  against the nearest source.
"""

from __future__ import annotations

from pathlib import Path

import torch

from multimix.core.batch import MASKED, UNMASKED
from multimix.core.progress import console
from multimix.data.assemble import TrainingData
from multimix.data.bank import Bank
from multimix.models.inference import run_model
from multimix.models.net import MultiMixNet
from multimix.models.postprocess import choose_plan, typical_components, write_plan
from multimix.models.shift import make_references, pooled_features, write_reference

MAX_REFERENCE = 1024  # training images the feature reference is estimated on, at most


def choose_postprocessing(
    run: Path,
    model: MultiMixNet,
    bank: Bank,
    train_masked: torch.Tensor,
    val_rows: torch.Tensor,
    device: torch.device,
) -> dict | None:
    """Decide the mask post-processing on the validation masks; None without any."""
    val_rows = val_rows[bank.known[val_rows].any(dim=1)] if len(val_rows) else val_rows
    if not len(val_rows) or not len(train_masked):
        return None
    components = typical_components(bank.masks[train_masked], bank.known[train_masked])
    images = bank.images[val_rows]
    probs = run_model(model, images, device, lambda z: z.float()).masks.float()
    flipped = run_model(model, images.flip(-1), device, lambda z: z.float()).masks.float()
    plan = choose_plan(
        probs, bank.masks[val_rows], bank.known[val_rows], bank.structures, components,
        flipped=flipped.flip(-1),
    )  # fmt: skip
    write_plan(run, plan)
    if plan["flip_average"]:
        console.log("masks: averaged with the mirrored image's (chosen on validation)")
    for name, step in plan["structures"].items():
        chosen = [k for k in ("keep_largest", "fill_holes") if step[k]] or ["nothing"]
        console.log(f"post-processing {name}: {' + '.join(chosen)} (chosen on validation)")
    return plan


def write_shift_reference(
    run: Path,
    model: MultiMixNet,
    bank: Bank,
    train_rows: torch.Tensor,
    val_rows: dict[str, torch.Tensor],
    seed: int,
    device: torch.device,
) -> dict | None:
    """Per training source: feature statistics of (up to ``MAX_REFERENCE``) of its training
    images and the distances of its validation images (``val_rows``: source -> rows)."""
    by_source: dict[str, list[int]] = {}
    for row in train_rows.tolist():
        by_source.setdefault(bank.records[row].source, []).append(row)
    parts = {}
    gen = torch.Generator().manual_seed(seed)
    for name, rows in sorted(by_source.items()):
        rows_t = torch.tensor(rows)
        if len(rows_t) > MAX_REFERENCE:
            pick = torch.randperm(len(rows_t), generator=gen)[:MAX_REFERENCE]
            rows_t = rows_t[pick.sort().values]
        val = val_rows.get(name, rows_t[:0])
        train = pooled_features(model, bank.images[rows_t], device)
        held = pooled_features(model, bank.images[val], device) if len(val) else train[:0]
        parts[name] = (train, held)
    reference = make_references(parts)
    if not reference["sources"]:
        return None
    write_reference(run, reference)
    return reference


def finalize_run(
    run: Path,
    best: MultiMixNet,
    data: TrainingData,
    task,
    trains_segmentation: bool,
    seed: int,
    device: torch.device,
) -> None:
    """Everything the best checkpoint decides on the run's own data after training: the
    task's step (a temperature; per-finding thresholds), the mask plan and the shift
    reference. The trainer calls it at the end of a run, ``multimix finalize`` on an old one."""
    roles = {name: info["roles"] for name, info in data.split["sources"].items()}

    def val_rows(role: str) -> torch.Tensor:
        parts = [rows for s, rows in data.val.items() if role in roles[s]]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    bank, rows = data.bank, data.rows
    task.after_training(run, best, bank, val_rows("class"), device)
    if trains_segmentation:
        choose_postprocessing(run, best, bank, rows[MASKED], val_rows("seg"), device)
    train_rows = torch.cat([rows[MASKED], rows[UNMASKED]]).unique()
    write_shift_reference(run, best, bank, train_rows, data.val, seed, device)
