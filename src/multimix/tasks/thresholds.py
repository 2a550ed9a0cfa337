"""Per-finding decision thresholds of a multi-label run (``RUN/thresholds.json``).

Chosen after training on the run's validation images (F1-best per finding, 0.5 where a
finding has no validation positives); ``evaluate`` chooses them again when the file is missing
or older than the best checkpoint, ``predict`` and the report read them (0.5 where absent).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from multimix.core.errors import CheckpointError
from multimix.data.bank import Bank, load_bank
from multimix.metrics.findings import DEFAULT_THRESHOLD, choose_thresholds

THRESHOLDS_FILE = "thresholds.json"

Probabilities = Callable[[Bank, torch.Tensor], torch.Tensor]  # (bank, rows) -> (n, F) probs


def write_thresholds(
    run: Path,
    bank: Bank | None,
    rows: torch.Tensor,
    findings: tuple[str, ...],
    probabilities: Probabilities,
) -> dict[str, float]:
    """F1-best thresholds on the labeled ``rows`` of ``bank`` (validation images), from the
    best checkpoint's ``probabilities``, written to ``RUN/thresholds.json``."""
    from multimix.core.atomic import atomic_write_text

    thresholds = {f: DEFAULT_THRESHOLD for f in findings}
    n = 0
    if bank is not None and len(rows):
        rows = rows[bank.labeled[rows]]
        n = len(rows)
        if n:
            probs = probabilities(bank, rows)
            codes = bank.targets[rows].numpy()
            thresholds = choose_thresholds(probs.numpy(), codes, findings)
    body = {"checkpoint": "best", "chosen_on": "val", "n_images": n, "thresholds": thresholds}
    atomic_write_text(Path(run) / THRESHOLDS_FILE, json.dumps(body, indent=2))
    return thresholds


def validation_bank(run: Path, image_size: int, space) -> Bank | None:
    """The validation images of the run's class sources (from ``RUN/split.json``)."""
    from multimix.data.assemble import load_split
    from multimix.data.sources import load_source

    split = load_split(Path(run) / "split.json")
    records = []
    for info in split["sources"].values():
        if "class" in info["roles"] and info["val"]:
            by_name = load_source(info["root"]).by_name()
            records += [by_name[n] for n in info["val"] if n in by_name]
    return load_bank(records, image_size, (), space, "choosing thresholds") if records else None


def run_thresholds(run: Path, choose: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The run's thresholds; ``choose()`` them now if missing, damaged or older than the best
    checkpoint."""
    path = Path(run) / THRESHOLDS_FILE
    best = Path(run) / "checkpoints" / "best.safetensors"
    if path.exists() and (not best.exists() or path.stat().st_mtime >= best.stat().st_mtime):
        try:
            return dict(json.loads(path.read_text())["thresholds"])
        except (ValueError, KeyError, TypeError):
            pass  # damaged: choose again
    return choose()


def read_thresholds(run: Path, findings: list[str]) -> tuple[dict[str, float], str | None]:
    """Per-finding thresholds from ``RUN/thresholds.json`` and a note when some fall back to
    0.5 (file absent, or a finding missing from it). A damaged file is an error naming it."""
    path = Path(run) / THRESHOLDS_FILE
    if not path.exists():
        note = f"{path} not found: every finding uses threshold {DEFAULT_THRESHOLD}"
        return {f: DEFAULT_THRESHOLD for f in findings}, note
    try:
        table = json.loads(path.read_text(encoding="utf-8"))["thresholds"]
        chosen = {str(k): float(v) for k, v in table.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(
            path, "is not a thresholds file (delete it; evaluate chooses them again)"
        ) from None
    missing = [f for f in findings if f not in chosen]
    note = None
    if missing:
        note = f"{path} has no threshold for {', '.join(missing)}: {DEFAULT_THRESHOLD} used"
    return {f: chosen.get(f, DEFAULT_THRESHOLD) for f in findings}, note
