"""What a finished run learns from its own data after training, with the best checkpoint.

Both steps read images already in memory and write one small JSON into the run folder, so
``evaluate``, ``predict`` and the report apply the same decisions:

* ``postprocess.json``: per structure, whether keeping the largest components (as many as the
  training masks typically have) and filling holes raises the validation Dice;
* ``shift_reference.json`` and ``.safetensors``: per training source, its images' feature
  mean and inverse covariance and its validation images' distances; a new folder is measured
  against the nearest source.
"""

from __future__ import annotations

from pathlib import Path

import torch

from multimix.core.progress import console
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
    probs = run_model(model, bank.images[val_rows], device, lambda z: z.float()).masks
    plan = choose_plan(
        probs, bank.masks[val_rows], bank.known[val_rows], bank.structures, components
    )
    write_plan(run, plan)
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
