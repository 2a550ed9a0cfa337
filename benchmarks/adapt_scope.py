"""Which batch norms ``--adapt`` should re-estimate, and how far: measured on finished runs.

    .venv/bin/python benchmarks/adapt_scope.py --bench /work/bench/le --out adapt_scope.json

Reads the runs and phantoms of a ``label_efficiency.py`` output folder (``--bench``) and
evaluates each run on the covid test part and on both phantom styles, once without adaptation
and once per ``--variants`` entry (``LAYERS:WEIGHT``, see :class:`multimix.models.adapt.
AdaptSpec`). Nothing is trained and no label reaches the adaptation. Per method (seeds
pooled): mean and sd of lung Dice on the covid test part and on pediatric phantoms, accuracy
on adult phantoms and on the covid set, and the covid set's normal recall. Writes JSON and a
markdown table beside it (``<out>_table.md``); finished evaluations are kept in the JSON, so a
rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import torch

from label_efficiency import USES_CLASS, USES_MASKS, get
from multimix.engine.precision import cpu_model
from multimix.models.adapt import AdaptSpec
from multimix.pipelines.evaluate import evaluate_run

LABEL_MAP = {"covid": "pneumonia", "ards": "pneumonia"}
FIGURES = {
    "covid_dice": ("covid_ieee8023", "segmentation", "dice"),
    "ped_dice": ("pediatric", "segmentation", "dice"),
    "adult_dice": ("adult", "segmentation", "dice"),
    "covid_acc": ("covid_ieee8023", "classification", "accuracy"),
    "covid_normal": ("covid_ieee8023", "classification", "per_class", "normal", "recall"),
    "adult_phantom_acc": ("adult", "classification", "accuracy"),
    "ped_phantom_acc": ("pediatric", "classification", "accuracy"),
}


def method_of(run: str) -> str:
    """``multimix-c100-m10-s2`` -> ``multimix-c100-m10``: seeds of one configuration pooled."""
    return re.sub(r"-s\d+$", "", run)


def scored(run: str, figure: str) -> bool:
    """Whether the run's method trains what ``figure`` scores: an ``enc`` run's decoder and a
    ``unet`` run's classifier are untrained, and their figures would be noise."""
    methods = USES_MASKS if FIGURES[figure][1] == "segmentation" else USES_CLASS
    base = max((m for m in USES_MASKS | USES_CLASS if run.startswith(f"{m}-")), key=len)
    return base in methods


def parse_variant(text: str) -> AdaptSpec | None:
    if text == "none":
        return None
    layers, _, weight = text.partition(":")
    return AdaptSpec(layers, float(weight or 1.0))


def summary(rows: list[dict]) -> dict:
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((method_of(row["run"]), row["variant"]), []).append(row)
    out = {}
    for (method, variant), members in sorted(groups.items()):
        cell = {"seeds": len(members)}
        for name in FIGURES:
            values = [m[name] for m in members if m[name] is not None and scored(m["run"], name)]
            if values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                cell[name] = {"mean": statistics.mean(values), "sd": sd}
        out.setdefault(method, {})[variant] = cell
    return out


def table(summed: dict, variants: list[str]) -> str:
    names = list(FIGURES)
    lines = [
        "| run | adapt | seeds | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for method, by_variant in summed.items():
        for variant in variants:
            cell = by_variant.get(variant)
            if cell is None:
                continue
            figs = [
                f"{cell[n]['mean']:.3f} ± {cell[n]['sd']:.3f}" if n in cell else "-" for n in names
            ]
            lines.append(f"| {method} | {variant} | {cell['seeds']} | " + " | ".join(figs) + " |")
    return "\n".join(lines) + "\n"


def save(args: argparse.Namespace, rows: list[dict]) -> dict:
    """The JSON after every evaluation (a rerun resumes from it); the summary back."""
    summed = summary(rows)
    result = {"settings": vars(args) | {"cpu": cpu_model()}, "rows": rows, "summary": summed}
    args.out.write_text(json.dumps(result, indent=1, default=str))
    return summed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="label_efficiency.py --out")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--runs", default="", help="comma-separated run names [all of them]")
    parser.add_argument("--variants", default="none,all:1,encoder:1,all:0.5,encoder:0.5")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    runs = args.runs.split(",") if args.runs else sorted(
        p.name for p in (args.bench / "runs").iterdir() if (p / "split.json").exists()
    )  # fmt: skip
    folders = [
        str(args.data / "covid_ieee8023"),
        str(args.bench / "phantoms" / "adult"),
        str(args.bench / "phantoms" / "pediatric"),
    ]
    done = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    have = {(r["run"], r["variant"]) for r in done}
    for run in runs:
        for variant in variants:
            if (run, variant) in have:
                continue
            metrics, _ = evaluate_run(
                args.bench / "runs" / run, folders, label_map=LABEL_MAP,
                adapt=parse_variant(variant) or False, precision="auto",
            )  # fmt: skip
            row = {"run": run, "variant": variant}
            row |= {name: get(metrics["sources"], *keys) for name, keys in FIGURES.items()}
            print(json.dumps(row), flush=True)
            done.append(row)
            save(args, done)
    summed = save(args, done)
    md = table(summed, variants)
    args.out.with_name(f"{args.out.stem}_table.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
