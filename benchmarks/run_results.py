"""What the per-run benchmarks write: ``OUT`` (settings and results, JSON) and, given a
table, ``OUT`` with ``.md``. Imported by the scripts beside it (run as
``python benchmarks/NAME.py``, their folder is on the path)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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
