"""KACL against enc and encssl at the same class labels and the same CPU minutes.

    python benchmarks/kacl.py --data ../shared/data --out benchmarks/results --seeds 0,1,2

Trains each method through the CLI on kermany_pneumonia (``--labeled-class`` labels, the rest
of the training part unlabeled) for the same wall-clock budget, keeps the best checkpoint by
validation and scores it on the patient-grouped test parts of kermany_pneumonia and, across
domains, covid_ieee8023 (covid and ards count as pneumonia). Finished runs are kept, so an
interrupted benchmark resumes. Writes kacl.json and kacl.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("enc", "encssl", "kacl")
LABEL_MAP = "covid=pneumonia,ards=pneumonia"


def multimix(*args) -> None:
    subprocess.run([sys.executable, "-m", "multimix", *map(str, args)], check=True)


def run_one(args, method: str, seed: int) -> dict:
    kermany, covid = args.data / "kermany_pneumonia", args.data / "covid_ieee8023"
    run = args.out / "runs" / f"kacl-bench-{method}-c{args.class_labels}-s{seed}"
    metrics_path = run / "test_metrics.json"
    if not metrics_path.exists():
        start = time.time()
        train = ["train", "--out", run, "--method", method, "--image-size", args.image_size]
        train += ["--max-minutes", args.minutes, "--seed", seed, "--label-map", LABEL_MAP]
        train += ["--val-every", args.val_every, "--class-data", kermany]
        train += ["--labeled-class", args.class_labels, "--seg-data", covid, "--labeled-seg", 0]
        multimix(*train)
        multimix("evaluate", run, "--data", kermany, "--data", covid, "--out", metrics_path)
        print(f"{run.name}: {time.time() - start:.0f} s", flush=True)
    sources = json.loads(metrics_path.read_text())["sources"]
    steps = sum(1 for _ in (run / "train_log.csv").open()) - 1
    k = sources.get("kermany_pneumonia", {}).get("classification", {})
    c = sources.get("covid_ieee8023", {}).get("classification", {})
    return {
        "method": method, "seed": seed, "steps": steps,
        "kermany_auc": k.get("auc"), "kermany_accuracy": k.get("accuracy"),
        "covid_auc": c.get("auc"), "covid_accuracy": c.get("accuracy"),
    }  # fmt: skip


def summary(results: list[dict]) -> dict:
    out = {}
    for method in METHODS:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue
        out[method] = {"runs": len(rows)}
        for key in ("steps", "kermany_auc", "kermany_accuracy", "covid_auc", "covid_accuracy"):
            values = [r[key] for r in rows if r[key] is not None]
            if values:
                out[method][key] = round(statistics.mean(values), 4)
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                out[method][key + "_sd"] = round(sd, 4)
    return out


def table(summ: dict) -> str:
    lines = [
        "| method | runs | steps | kermany AUC | kermany acc | covid AUC | covid acc |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(s, key, digits=3):
        if key not in s:
            return "-"
        return f"{s[key]:.{digits}f} ± {s[key + '_sd']:.{digits}f}"

    for method, s in summ.items():
        lines.append(
            f"| {method} | {s['runs']} | {s.get('steps', 0):.0f} | {cell(s, 'kermany_auc')} "
            f"| {cell(s, 'kermany_accuracy')} | {cell(s, 'covid_auc')} "
            f"| {cell(s, 'covid_accuracy')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--minutes", type=float, default=2.0, help="training budget per run")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--class-labels", default="100")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--val-every", type=int, default=25)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results = [run_one(args, m, s) for s in seeds for m in args.methods.split(",")]
    summ = summary(results)
    settings = {k: str(v) for k, v in vars(args).items()}
    record = {"settings": settings, "summary": summ, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kacl.json").write_text(json.dumps(record, indent=1) + "\n")
    md = table(summ)
    (args.out / "kacl.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
