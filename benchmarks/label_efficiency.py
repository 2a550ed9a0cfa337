"""Label efficiency on real radiographs: every method at class labels x masks, same CPU budget.

    python benchmarks/label_efficiency.py --data ../shared/data --out benchmarks/results

Classification source: kermany_pneumonia; segmentation source: covid_ieee8023 (covid and ards
count as pneumonia). Each run trains through the CLI for the same wall-clock budget, then is
evaluated on the held-out, patient-grouped test parts of both sources. Finished runs are kept, so
an interrupted benchmark resumes where it stopped. Writes label_efficiency.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("unet", "enc", "encssl", "umtl", "umtls", "multimix")
USES_CLASS = {"enc", "encssl", "umtl", "umtls", "multimix"}
USES_MASKS = {"unet", "umtl", "umtls", "multimix"}
LABEL_MAP = "covid=pneumonia,ards=pneumonia"


def run_key(method: str, n_cls: str, n_seg: str) -> str:
    return f"{method}-c{n_cls}-m{n_seg}"


def configurations(methods, class_counts, mask_counts):
    """Unique runs: a method that ignores class labels (or masks) is run once per other axis."""
    seen = set()
    for method in methods:
        for n_cls in class_counts if method in USES_CLASS else ["0"]:
            for n_seg in mask_counts if method in USES_MASKS else ["0"]:
                if (method, n_cls, n_seg) not in seen:
                    seen.add((method, n_cls, n_seg))
                    yield method, n_cls, n_seg


def multimix(*args: str) -> None:
    cmd = [sys.executable, "-m", "multimix", *map(str, args)]
    subprocess.run(cmd, check=True)


def run_one(args, method: str, n_cls: str, n_seg: str) -> dict:
    kermany, covid = args.data / "kermany_pneumonia", args.data / "covid_ieee8023"
    run = args.out / "runs" / run_key(method, n_cls, n_seg)
    metrics_path = run / "test_metrics.json"
    if not metrics_path.exists():
        start = time.time()
        if (run / "checkpoints" / "last.safetensors").exists():
            multimix("train", "--resume", run)
        else:
            train = ["train", "--out", run, "--method", method, "--image-size", args.image_size]
            train += ["--max-minutes", args.minutes, "--seed", args.seed, "--label-map", LABEL_MAP]
            train += ["--val-every", args.val_every]
            # Both sources in their roles for every method (a count of 0 where the method
            # ignores that label kind), so every run has the same patient-grouped split.
            train += ["--class-data", kermany, "--labeled-class", n_cls]
            train += ["--seg-data", covid, "--labeled-seg", n_seg]
            multimix(*train)
        multimix("evaluate", run, "--data", kermany, "--data", covid, "--out", metrics_path)
        print(f"{run.name}: {time.time() - start:.0f} s", flush=True)
    metrics = json.loads(metrics_path.read_text())["sources"]
    steps = sum(1 for _ in (run / "train_log.csv").open()) - 1
    return {"method": method, "class_labels": n_cls, "masks": n_seg, "steps": steps, **metrics}


def cell(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[dict], class_counts, mask_counts) -> str:
    """One row per run; a method that ignores class labels or masks has one run for all of them."""
    head = (
        "| method | class labels | masks | steps | pneumonia acc | pneumonia AUC | covid-set acc "
        "| lung Dice | lung HD95 (px) |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    index = {(r["method"], r["class_labels"], r["masks"]): r for r in results}
    lines, seen = [], set()
    for method in METHODS:
        for n_cls in class_counts:
            for n_seg in mask_counts:
                key = (
                    method,
                    n_cls if method in USES_CLASS else "0",
                    n_seg if method in USES_MASKS else "0",
                )
                r = index.get(key)
                if r is None or key in seen:
                    continue
                seen.add(key)
                k = r.get("kermany_pneumonia", {}).get("classification", {})
                c = r.get("covid_ieee8023", {})
                cc, seg = c.get("classification", {}), c.get("segmentation", {})
                if method not in USES_CLASS:
                    k, cc = {}, {}
                if method not in USES_MASKS:
                    seg = {}
                lines.append(
                    f"| {method} | {n_cls if method in USES_CLASS else '-'} "
                    f"| {n_seg if method in USES_MASKS else '-'} | {r['steps']} "
                    f"| {cell(k.get('accuracy'))} | {cell(k.get('auc'))} "
                    f"| {cell(cc.get('accuracy'))} | {cell(seg.get('dice'))} "
                    f"| {cell(seg.get('hd95'), 1)} |"
                )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per run")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-every", type=int, default=25)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--class-labels", default="100,all")
    parser.add_argument("--masks", default="10,all")
    args = parser.parse_args()
    class_counts, mask_counts = args.class_labels.split(","), args.masks.split(",")
    results = [
        run_one(args, *conf)
        for conf in configurations(args.methods.split(","), class_counts, mask_counts)
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items()}
    (args.out / "label_efficiency.json").write_text(
        json.dumps({"settings": settings, "results": results}, indent=1)
    )
    md = table(results, class_counts, mask_counts)
    (args.out / "label_efficiency.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
