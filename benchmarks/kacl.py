"""KACL against its baselines at the same class labels and the same CPU minutes, three seeds.

    python benchmarks/kacl.py --data ../shared/data --out benchmarks/results --seeds 0,1,2

Two parts, each run trained through the CLI with ``--clock cpu --threads 1``, so every run gets
the same budget of its own process's CPU time however many other jobs share the cores:

- ``kermany``: ``enc``, ``encssl`` and ``kacl`` on kermany_pneumonia (``--class-labels`` labels,
  the rest of the training part unlabeled), best checkpoint by validation, scored on the
  patient-grouped test part of kermany_pneumonia and, across domains, on all of covid_ieee8023
  (covid and ards count as pneumonia): AUC and accuracy.
- ``every``: ``kacl`` with its CAM regions recomputed only every 4 and 16 steps (``--every``),
  the same budget: what the recomputation costs, in steps, and whether skipping it matters.
- ``phantoms``: ``--task multilabel`` on multi-label phantoms with boxes, the plain classifier
  (``--method multilabel``) against ``kacl``, neither with a localization head, so both place
  boxes and zones from their classifier's CAM: mean AUC, box hits at IoU 0.1-0.5 and zone
  accuracy on a separate test folder.

``--jobs`` runs go at a time. A finished run (its metrics file) is kept and an unfinished one is
trained again from scratch, so an interrupted benchmark resumes. Writes kacl.json and kacl.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KERMANY_METHODS = ("enc", "encssl", "kacl")
PHANTOM_METHODS = ("multilabel", "kacl")
FINDINGS = "cardiomegaly,effusion,nodule,opacity"
LABEL_MAP = "covid=pneumonia,ards=pneumonia"
IOUS = ("0.1", "0.2", "0.3", "0.4", "0.5")
NOTES = "<!-- Above: written by benchmarks/kacl.py on every run. Below: notes by hand, kept. -->\n"


def multimix(log: Path, *args) -> None:
    """One CLI call, its output appended to ``log`` (runs go in parallel)."""
    with log.open("a") as fh:
        cmd = [sys.executable, "-m", "multimix", *map(str, args)]
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # evaluate has no --threads
        subprocess.run(cmd, check=True, stdout=fh, stderr=subprocess.STDOUT, env=env)


def _fresh(run: Path) -> None:
    """An unfinished run from an interrupted benchmark: start it again, so its budget is whole."""
    if run.exists():
        shutil.rmtree(run)


def _mean_column(run: Path, name: str = "regions_computed") -> float | None:
    """Mean over training steps of a train_log column (kacl: the share of CAM regions
    computed afresh in a step), None where the method does not log it."""
    with (run / "train_log.csv").open() as fh:
        values = [row[name] for row in csv.DictReader(fh) if row.get(name) not in (None, "")]
    return round(statistics.mean(map(float, values)), 4) if values else None


def _steps(run: Path) -> int:
    with (run / "train_log.csv").open() as fh:
        return sum(1 for _ in fh) - 1


def kermany_run(args, method: str, seed: int, every: int = 1) -> dict:
    kermany, covid = args.data / "kermany_pneumonia", args.data / "covid_ieee8023"
    tag = f"-e{every}" if every > 1 else ""
    run = args.out / "runs" / f"kacl-bench-{method}{tag}-c{args.class_labels}-s{seed}"
    metrics_path = run / "test_metrics.json"
    if not metrics_path.exists():
        _fresh(run)
        run.mkdir(parents=True)
        log = run.parent / f"{run.name}.log"
        start = time.time()
        train = ["train", "--out", run, "--method", method, "--image-size", args.image_size]
        train += ["--max-minutes", args.minutes, "--clock", "cpu", "--threads", 1]
        train += ["--seed", seed, "--label-map", LABEL_MAP, "--val-every", args.val_every]
        train += ["--class-data", kermany, "--labeled-class", args.class_labels]
        train += ["--set", f"method.every={every}"] if every > 1 else []
        multimix(log, *train)
        multimix(log, "evaluate", run, "--data", kermany, "--data", covid,
                 "--out", metrics_path.with_suffix(".tmp"))  # fmt: skip
        metrics_path.with_suffix(".tmp").rename(metrics_path)
        print(f"{run.name}: {time.time() - start:.0f} s wall", flush=True)
    sources = json.loads(metrics_path.read_text())["sources"]
    k = sources.get("kermany_pneumonia", {}).get("classification", {})
    c = sources.get("covid_ieee8023", {}).get("classification", {})
    return {
        "part": "kermany", "method": method + (f" every={every}" if every > 1 else ""),
        "seed": seed, "steps": _steps(run), "regions_computed": _mean_column(run),
        "kermany_auc": k.get("auc"), "kermany_accuracy": k.get("accuracy"),
        "covid_auc": c.get("auc"), "covid_accuracy": c.get("accuracy"),
    }  # fmt: skip


def phantom_data(args) -> tuple[Path, Path]:
    from multimix.data.phantom import write_source

    root = args.out / "runs" / "kacl-phantoms"
    train, test = root / "train", root / "test"
    for path, count, seed in ((train, args.phantom_train, 300), (test, args.phantom_test, 400)):
        if not (path / "boxes.csv").exists():
            write_source(path, count, seed=seed, size=args.phantom_size, multilabel=True)
    return train, test


def phantom_run(args, method: str, seed: int, train: Path, test: Path) -> dict:
    run = args.out / "runs" / f"kacl-bench-phantom-{method}-s{seed}"
    metrics_path = run / "test_metrics.json"
    if not metrics_path.exists():
        _fresh(run)
        run.mkdir(parents=True)
        log = run.parent / f"{run.name}.log"
        start = time.time()
        cmd = ["train", "--out", run, "--task", "multilabel", "--method", method]
        cmd += ["--classes", FINDINGS, "--class-data", train]
        cmd += ["--labeled-class", args.phantom_labels]
        cmd += ["--image-size", args.phantom_size, "--test-fraction", 0, "--seed", seed]
        cmd += ["--max-minutes", args.phantom_minutes, "--clock", "cpu", "--threads", 1]
        cmd += ["--val-every", args.val_every, "--batch-size", 16]
        multimix(log, *cmd)
        multimix(log, "evaluate", run, "--data", test, "--out", metrics_path.with_suffix(".tmp"))
        metrics_path.with_suffix(".tmp").rename(metrics_path)
        print(f"{run.name}: {time.time() - start:.0f} s wall", flush=True)
    block = json.loads(metrics_path.read_text())["sources"][test.name]
    loc = block.get("localization") or {}
    hits = loc.get("box_iou_hit") or {}
    return {
        "part": "phantoms", "method": method, "seed": seed, "steps": _steps(run),
        "mean_auc": block["multilabel"]["mean_auc"],
        "zone_accuracy": loc.get("zone_accuracy"), "cam": loc.get("cam"),
        **{f"box_hit_{t}": hits.get(t) for t in IOUS},
    }  # fmt: skip


def region_cost(args, repeats: int = 5) -> dict:
    """CPU seconds (this process, one thread) of one kacl step's parts at ``--image-size`` on
    kermany-sized batches (8 labeled + 8 unlabeled, default widths): the network's forward
    and backward over the three views, and the CAM regions + radiomics of the 16 weak views
    that ``every`` = N skips on N - 1 steps of N for images it has seen."""
    import torch

    from multimix.core.batch import LABELED, UNLABELED, Batch, Draw
    from multimix.methods.base import get_method
    from multimix.methods.kacl import GREY_SCALE, cam_regions
    from multimix.models.net import ModelConfig, MultiMixNet
    from multimix.models.radiomics import feature_matrix

    torch.set_num_threads(1)
    torch.manual_seed(0)
    size = args.image_size
    model = MultiMixNet(ModelConfig(bridge=False)).to(memory_format=torch.channels_last)
    method = get_method("kacl")
    method.modules = method.setup(model)
    g = torch.Generator().manual_seed(0)
    lab = torch.rand(8, 1, size, size, generator=g)
    unl = torch.rand(8, 1, size, size, generator=g)
    batch = Batch(
        {
            LABELED: Draw.of(weak=lab, targets=torch.randint(0, 2, (8,), generator=g)),
            UNLABELED: Draw.of(weak=unl, strong=unl.flip(-1)),
        }
    )
    batch[UNLABELED].rows += 8

    def clock(fn) -> float:
        fn()  # warm-up
        start = time.process_time()
        for _ in range(repeats):
            fn()
        return (time.process_time() - start) / repeats

    def step() -> None:
        loss, _ = method.loss(model, batch, 0)
        loss.backward()

    x = torch.cat([lab, unl])

    def regions() -> None:
        with torch.no_grad():
            feats = model.encode(x)  # the step has these already; subtracted below
            region = cam_regions(model.classifier, feats[-1:], x.shape[-2:], 0.5)
            feature_matrix(x[:, 0] * GREY_SCALE, region, bin_count=16)

    def encode_only() -> None:
        with torch.no_grad():
            model.encode(x)

    full, with_regions, encode = clock(step), clock(regions), clock(encode_only)
    part = max(with_regions - encode, 0.0)
    return {
        "image_size": size, "step_cpu_s": round(full, 4), "regions_cpu_s": round(part, 4),
        "regions_share_of_step": round(part / full, 4),
    }  # fmt: skip


KERMANY_KEYS = ("steps", "regions_computed", "kermany_auc", "kermany_accuracy")
KERMANY_KEYS += ("covid_auc", "covid_accuracy")
PHANTOM_KEYS = ("steps", "mean_auc", *(f"box_hit_{t}" for t in IOUS), "zone_accuracy")


def summary(results: list[dict], part: str, methods, keys) -> dict:
    out = {}
    for method in methods:
        rows = [r for r in results if r["part"] == part and r["method"] == method]
        if not rows:
            continue
        out[method] = {"runs": len(rows)}
        for key in keys:
            values = [r[key] for r in rows if r[key] is not None]
            if values:
                out[method][key] = round(statistics.mean(values), 4)
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                out[method][key + "_sd"] = round(sd, 4)
    return out


def _cell(s: dict, key: str, digits: int = 3) -> str:
    if key not in s:
        return "-"
    if key == "steps":
        return f"{s[key]:.0f} ± {s[key + '_sd']:.0f}"
    return f"{s[key]:.{digits}f} ± {s[key + '_sd']:.{digits}f}"


def table(summ: dict, keys, names) -> str:
    lines = ["| method | runs | " + " | ".join(names) + " |", "|---" * (len(keys) + 2) + "|"]
    for method, s in summ.items():
        lines.append(f"| {method} | {s['runs']} | " + " | ".join(_cell(s, k) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--minutes", type=float, default=2.0, help="CPU minutes per kermany run")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--class-labels", default="100")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--val-every", type=int, default=25)
    parser.add_argument("--methods", default=",".join(KERMANY_METHODS))
    parser.add_argument("--every", default="4,16", help="kacl's recompute intervals to add")
    parser.add_argument("--phantom-minutes", type=float, default=1.0)
    parser.add_argument("--phantom-size", type=int, default=64)
    parser.add_argument("--phantom-train", type=int, default=400)
    parser.add_argument("--phantom-test", type=int, default=200)
    parser.add_argument("--phantom-labels", default="100")
    parser.add_argument("--parts", default="kermany,every,phantoms,cost")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = args.parts.split(",")
    everies = [int(e) for e in args.every.split(",") if e]
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    jobs = []
    if "kermany" in parts:
        jobs += [(kermany_run, (args, m, s)) for s in seeds for m in args.methods.split(",")]
    if "every" in parts:
        jobs += [(kermany_run, (args, "kacl", s, e)) for s in seeds for e in everies]
    if "phantoms" in parts:
        train, test = phantom_data(args)
        jobs += [(phantom_run, (args, m, s, train, test)) for s in seeds for m in PHANTOM_METHODS]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: job[0](*job[1]), jobs))
    kermany_labels = [*KERMANY_METHODS, *(f"kacl every={e}" for e in everies)]
    summ = {
        "kermany": summary(results, "kermany", kermany_labels, KERMANY_KEYS),
        "phantoms": summary(results, "phantoms", PHANTOM_METHODS, PHANTOM_KEYS),
    }
    settings = {k: str(v) for k, v in vars(args).items()}
    record = {"settings": settings, "summary": summ, "results": results}
    if "cost" in parts:
        record["region_cost"] = region_cost(args)
    (args.out / "kacl.json").write_text(json.dumps(record, indent=1) + "\n")
    md = "## kermany_pneumonia (and covid_ieee8023 cross-domain)\n\n"
    md += table(summ["kermany"], KERMANY_KEYS,
                ["steps", "regions computed", "kermany AUC", "kermany acc", "covid AUC",
                 "covid acc"])  # fmt: skip
    md += "\n## Multi-label phantoms with boxes (boxes and zones from the classifier's CAM)\n\n"
    md += table(summ["phantoms"], PHANTOM_KEYS,
                ["steps", "mean AUC", *(f"box hit @{t}" for t in IOUS), "zone acc"])  # fmt: skip
    if "region_cost" in record:
        c = record["region_cost"]
        md += (
            f"\nCAM regions + radiomics of a step's 16 weak views at {c['image_size']} px: "
            f"{c['regions_cpu_s']:.3f} CPU s of a {c['step_cpu_s']:.3f} CPU s step "
            f"({100 * c['regions_share_of_step']:.0f}%, one thread).\n"
        )
    md_path = args.out / "kacl.md"
    old = md_path.read_text() if md_path.exists() else ""
    notes = old.split(NOTES, 1)[1] if NOTES in old else "\n"
    md_path.write_text(md + "\n" + NOTES + notes)
    print(md)


if __name__ == "__main__":
    main()
