"""Does averaging each mask with the mirrored image's raise lung Dice off the training data?

    python benchmarks/flip_average.py --runs RUN [RUN ...] --data FOLDER [FOLDER ...] --out F.json

For each run, the post-processing plan is chosen again by the library's own code
(``engine.finalize.choose_postprocessing``, which now also decides ``flip_average`` on the
validation masks) into a copy of the run (``OUT_DIR/runs/RUN``: its JSON files copied, its
checkpoints linked; the run itself is not touched). ``evaluate`` then scores the run as it was
and the copy on the segmentation sources' test parts and on every ``--data`` folder with
masks. Runs trained before the choice existed have a plan without flipping, so "before" is
their own ``postprocess.json``.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import torch

from multimix.data.assemble import load_split
from multimix.data.bank import load_bank
from multimix.data.sources import load_source
from multimix.engine.evaluate import load_run
from multimix.engine.finalize import choose_postprocessing
from multimix.models.postprocess import read_plan
from multimix.pipelines.evaluate import evaluate_run, held_out_records
from run_results import run_parser, write_results


def rechoose(run: Path, out: Path) -> tuple[Path, dict, list[str]]:
    """A copy of ``run`` with its plan chosen again; the copy, the plan, the mask sources."""
    copy = out / "runs" / run.name
    copy.mkdir(parents=True, exist_ok=True)
    for f in run.glob("*.json"):
        shutil.copy2(f, copy / f.name)
    for f in run.glob("shift_reference.*"):
        shutil.copy2(f, copy / f.name)
    if not (copy / "checkpoints").exists():
        (copy / "checkpoints").symlink_to((run / "checkpoints").resolve())
    device = torch.device("cpu")
    cfg, model = load_run(run, device=device)
    split = load_split(run / "split.json")
    records, roles, mask_sources = [], [], []
    for name, info in split["sources"].items():
        source = load_source(info["root"], name=name)
        if not any(r.masks for r in source.records):
            continue
        mask_sources.append(info["root"])
        for part in ("train", "val"):
            chosen, _ = held_out_records(source, split, part)
            records += chosen
            roles += [part] * len(chosen)
    bank = load_bank(records, cfg.image_size, tuple(cfg.structures), None, f"loading {run.name}")
    roles_t = np.array(roles)
    masked = bank.known.any(dim=1).numpy()
    train = torch.from_numpy(np.flatnonzero((roles_t == "train") & masked))
    val = torch.from_numpy(np.flatnonzero(roles_t == "val"))
    choose_postprocessing(copy, model, bank, train, val, device)
    return copy, read_plan(copy), mask_sources


def lung_dice(run: Path, folders: list[str]) -> dict[str, float]:
    metrics, _ = evaluate_run(run, folders)
    out = {}
    for name, block in metrics["sources"].items():
        seg = block.get("segmentation")
        if seg and seg.get("dice") is not None:
            out[name] = float(seg["dice"])
    return out


def table(results: dict) -> str:
    by_method: dict[str, list[dict]] = {}
    for run, r in results.items():
        method = run.rsplit("-s", 1)[0] if run.rsplit("-s", 1)[-1].isdigit() else run
        by_method.setdefault(method, []).append(r)
    folders = list(next(iter(results.values()))["before"])
    lines = [
        "| runs | flip chosen | " + " | ".join(f"{f}: before -> after" for f in folders) + " |",
        "|" + "---|" * (len(folders) + 2),
    ]

    def fmt(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.4f}"
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

    for method, rs in by_method.items():
        chosen = sum(r["flip_average"] for r in rs)
        cells = [
            f"{fmt([r['before'][f] for r in rs])} -> {fmt([r['after'][f] for r in rs])}"
            for f in folders
        ]
        head = f"| {method} ({len(rs)}) | {chosen} of {len(rs)} | "
        lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = run_parser(__doc__)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for run in args.runs:
        copy, plan, mask_sources = rechoose(run, args.out.parent)
        folders = mask_sources + [str(f) for f in args.data]
        results[run.name] = {
            "flip_average": plan["flip_average"],
            "val_dice_flip_average": plan.get("val_dice_flip_average"),
            "before": lung_dice(run, folders),
            "after": lung_dice(copy, folders),
        }
        print(run.name, json.dumps(results[run.name]), flush=True)
    write_results(args.out, args.runs, args.data, results, table(results))


if __name__ == "__main__":
    main()
