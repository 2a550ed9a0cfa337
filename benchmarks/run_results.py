"""What the per-run benchmarks write: ``OUT`` (settings and results, JSON) and, given a
table, ``OUT`` with ``.md``. Imported by the scripts beside it (run as
``python benchmarks/NAME.py``, their folder is on the path)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import multimix.api as mm
from multimix.engine.precision import cpu_model


def write_results(
    out: Path, runs: list[Path], data: list[Path], results: dict, table: str | None = None
) -> None:
    settings = {"runs": [str(r) for r in runs], "data": [str(d) for d in data]}
    settings["cpu"] = cpu_model()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": settings, "results": results}, indent=1))
    if table is not None:
        out.with_suffix(".md").write_text(table)


def run_parser(doc: str, data_required: bool = False) -> argparse.ArgumentParser:
    """``--runs RUN ... --data FOLDER ... --out F.json``, the options these scripts share."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    if data_required:
        parser.add_argument("--data", type=Path, nargs="+", required=True)
    else:
        parser.add_argument("--data", type=Path, nargs="*", default=[])
    parser.add_argument("--out", type=Path, required=True, help="results JSON (and .md)")
    return parser


def score_folders(doc: str, score: Callable, table: Callable[[dict], str]) -> None:
    """A whole script for figures per run and folder: ``score(model, run, folder)`` for every
    ``--runs`` run (loaded through :mod:`multimix.api`, as ``predict`` runs it) and ``--data``
    folder, printed per run as it finishes, then written with ``table(results)``."""
    args = run_parser(doc, data_required=True).parse_args()
    results = {}
    for run in args.runs:
        model = mm.load(run)
        results[run.name] = {f.name: score(model, run, f) for f in args.data}
        print(run.name, json.dumps(results[run.name]), flush=True)
    write_results(args.out, args.runs, args.data, results, table(results))


def folder_table(results: dict[str, dict[str, dict]], header: list[str], cells: Callable) -> str:
    """A markdown table, one row per run and folder: ``header`` names the columns after run
    and folder, ``cells(figures)`` gives that row's."""
    lines = ["| run | folder | " + " | ".join(header) + " |", "|" + "---|" * (len(header) + 2)]
    for run, per_folder in results.items():
        for name, f in per_folder.items():
            lines.append(f"| {run} | {name} | " + " | ".join(cells(f)) + " |")
    return "\n".join(lines) + "\n"
