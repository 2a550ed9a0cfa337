"""Do segmentation and localization as auxiliary tasks raise multi-label AUC, more so under
label noise?

    python benchmarks/multitask.py --out benchmarks/results            # the reported run
    python benchmarks/multitask.py --out /tmp/mt --train 60 --test 30 --steps 4 --seeds 0 \
        --noise 0,0.4                                                   # a smoke check

Phantoms (64x64, findings cardiomegaly/effusion/nodule/opacity with exact masks and boxes):
one training folder whose labels are flipped per finding with probability 0, 0.2 and 0.4 (the
same images at every noise level, only the labels differ) and one clean test folder. For each
noise level and seed, ``--task multilabel`` is trained with no auxiliary task and with
``--aux segmentation,localization``, the SAME NUMBER OF STEPS each (a step budget, so the result
does not depend on what else shares the CPU; wall time is recorded too), best checkpoint by
(noisy) validation mean AUC, and scored on the clean test folder. Writes multitask.json and
multitask.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("MULTIMIX_NO_REEXEC", "1")

FINDINGS = ["cardiomegaly", "effusion", "nodule", "opacity"]
# name -> (auxiliary tasks, steps as a multiple of --steps). An aux step costs about four
# "alone" steps of CPU time, so "alone x4" is classification alone at the aux arm's wall time.
SETTINGS = {
    "alone": ([], 1),
    "seg+loc": (["segmentation", "localization"], 1),
    "alone x4": ([], 4),
}


def phantoms(args) -> dict[str, Path]:
    from multimix.data.phantom import write_source

    root = args.out / "multitask" / "data"
    folders = {}
    for noise in args.noise:
        path = root / f"train_noise{noise:g}"
        if not (path / "boxes.csv").exists():
            write_source(path, args.train, seed=100, size=args.size, multilabel=True,
                         label_noise=noise)  # fmt: skip
        folders[f"{noise:g}"] = path
    test = root / "test_clean"
    if not (test / "boxes.csv").exists():
        write_source(test, args.test, seed=200, size=args.size, multilabel=True)
    folders["test"] = test
    return folders


def one_run(
    args,
    data: Path,
    test: Path,
    aux: list[str],
    seed: int,
    run: Path,
    steps_factor: int = 1,
    **options,
) -> dict:
    """Train and score one configuration; ``options`` are further MultiLabelOptions fields."""
    from multimix.config import TrainConfig
    from multimix.engine.trainer import resume, train
    from multimix.pipelines.evaluate import evaluate_run

    metrics_path = run / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    cfg = TrainConfig(
        out=str(run), task="multilabel", method="multilabel", class_data=[str(data)],
        seg_data=[str(data)] if aux else [], classes=FINDINGS, image_size=args.size,
        structures=[],  # every structure the masks have: lungs, clavicles, heart
        steps=args.steps * steps_factor, val_every=max(1, args.steps * steps_factor // 4),
        batch_size=args.batch_size,
        test_fraction=0.0, val_fraction=0.15, seed=seed, threads=args.threads,
        task_options={"aux": list(aux), **options},
    )  # fmt: skip
    start = time.perf_counter()
    if (run / "checkpoints" / "last.safetensors").exists():
        resume(run)  # an interrupted benchmark goes on where it stopped
    else:
        train(cfg)
    wall = time.perf_counter() - start
    metrics, _ = evaluate_run(run, [str(test)])
    block = metrics["sources"][test.name]
    out = {
        "steps": args.steps * steps_factor,
        "wall_s": round(wall, 1),
        "mean_auc": block["multilabel"]["mean_auc"],
        "f1_macro": block["multilabel"]["f1_macro"],
        "auc": {f: v["auc"] for f, v in block["multilabel"]["per_finding"].items()},
        "localization": block.get("localization"),
        "segmentation": {
            k: v["dice"]
            for k, v in (block.get("segmentation") or {}).items()
            if isinstance(v, dict)
        },
    }
    metrics_path.write_text(json.dumps(out, indent=1))
    return out


def summarise(results: list[dict], args) -> str:
    def cell(values: list[float]) -> str:
        if len(values) < 2:
            return f"{values[0]:.3f}"
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"

    lines = [
        f"Phantoms {args.size}x{args.size}: {args.train} training images (15% validation, "
        f"noisy labels), {args.test} clean test images; {args.steps} steps "
        f"(x4 where said) of batch {args.batch_size} per run; "
        f"seeds {', '.join(map(str, args.seeds))}; "
        "mean ± sd over seeds.",
        "",
        "| label noise | aux tasks | mean AUC | AUC gain (aux - alone) | zone accuracy | "
        "box hit @IoU 0.1 | box hit @0.3 | lung Dice | heart Dice | wall s/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for noise in args.noise:
        key = f"{noise:g}"
        rows = {
            s: [r for r in results if r["noise"] == key and r["setting"] == s] for s in SETTINGS
        }
        by_seed = {s: {r["seed"]: r for r in rows[s]} for s in SETTINGS}
        gains = [
            by_seed["seg+loc"][sd]["mean_auc"] - by_seed["alone"][sd]["mean_auc"]
            for sd in args.seeds
            if sd in by_seed["seg+loc"] and sd in by_seed["alone"]
        ]
        for setting in SETTINGS:
            rs = rows[setting]
            if not rs:
                continue
            loc = [r["localization"] or {} for r in rs]
            # An untrained decoder's Dice means nothing: only runs that learnt masks show one.
            seg = [r["segmentation"] if SETTINGS[setting][0] else {} for r in rs]

            def opt(values):
                values = [v for v in values if v is not None]
                return cell(values) if values else "-"

            lines.append(
                f"| {key} | {setting} | {cell([r['mean_auc'] for r in rs])} | "
                f"{cell(gains) if setting == 'seg+loc' and gains else '-'} | "
                f"{opt([x.get('zone_accuracy') for x in loc])} | "
                f"{opt([(x.get('box_iou_hit') or {}).get('0.1') for x in loc])} | "
                f"{opt([(x.get('box_iou_hit') or {}).get('0.3') for x in loc])} | "
                f"{opt([s.get('lungs') for s in seg])} | {opt([s.get('heart') for s in seg])} | "
                f"{statistics.mean(r['wall_s'] for r in rs):.0f} |"
            )
    return "\n".join(lines) + "\n"


def parse_args(description: str, noise: str) -> argparse.Namespace:
    """The phantom and budget options both phantom benchmarks share."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--noise", default=noise)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    args.noise = [float(v) for v in args.noise.split(",")]
    args.seeds = [int(v) for v in args.seeds.split(",")]
    return args


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], "0,0.2,0.4")
    folders = phantoms(args)
    results = []
    for noise in args.noise:
        for setting, (aux, factor) in SETTINGS.items():
            for seed in args.seeds:
                name = f"noise{noise:g}-{setting.replace(' ', '')}-s{seed}"
                run = args.out / "multitask" / "runs" / name
                r = one_run(args, folders[f"{noise:g}"], folders["test"], aux, seed, run, factor)
                results.append({"noise": f"{noise:g}", "setting": setting, "seed": seed, **r})
                print(f"noise {noise:g} {setting} seed {seed}: mean AUC {r['mean_auc']:.3f}, "
                      f"{r['wall_s']} s", flush=True)  # fmt: skip
    table = summarise(results, args)
    (args.out / "multitask.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": results}, indent=1)
    )
    (args.out / "multitask.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
