"""How much of a run's time budget went to validation, read back from its logs.

The trainer validates (and checkpoints) after every ``--val-every``-th step, inside the budget,
so the step gap in ``train_log.csv`` at a validated step is one step plus one validation. Per
run: the mean step gap elsewhere, the seconds per validation (gap minus that mean step) and
the share of the elapsed time spent validating. Writes JSON.

    .venv/bin/python benchmarks/validation_share.py RUN [RUN ...] --out validation_share.json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path


def validation_cost(run: Path) -> dict[str, float]:
    rows = list(csv.DictReader((run / "train_log.csv").open()))
    validated = {int(r["step"]) for r in csv.DictReader((run / "val_log.csv").open())}
    gaps, previous = {}, 0.0
    for row in rows:
        elapsed = float(row["elapsed"])
        gaps[int(row["step"])] = elapsed - previous
        previous = elapsed
    # The validation after step s lands in the gap of step s + 1 (the clock is read per step).
    at_val = [gaps[s + 1] for s in validated if s + 1 in gaps]
    other = [g for s, g in gaps.items() if s - 1 not in validated]
    step = statistics.mean(other)
    per_val = statistics.mean(at_val) - step
    return {
        "steps": len(rows),
        "elapsed_s": previous,
        "mean_step_s": step,
        "validations": len(at_val),
        "validation_s": per_val,
        "validation_share": per_val * len(at_val) / previous,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = {str(run): validation_cost(run) for run in args.runs}
    for run, r in results.items():
        print(
            f"{run}: {r['steps']} steps, {r['validation_s']:.2f} s per validation, "
            f"share {r['validation_share']:.3f}"
        )
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
