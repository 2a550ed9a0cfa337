"""Where lung Dice is lost: predicted against true lung area, per run and folder.

    python benchmarks/mask_area.py --runs RUN [RUN ...] --data FOLDER [FOLDER ...] --out F.json

A Dice below 1 is either too much lung, too little, or lung in the wrong place. The ratio of
predicted to true lung pixels (summed over a folder) tells the first two apart: a model that
outlines the whole lung field where a folder's masks mark less scores a ratio well above 1.
Every image of each folder that has a mask is used, through the API (``multimix.api``), so the
masks are the ones ``predict`` returns (post-processing included).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import multimix.api as mm
from multimix.data.io import read_mask
from multimix.engine.precision import cpu_model
from multimix.metrics.segmentation import per_image_dice


def folder_figures(model: mm.Model, folder: Path) -> dict[str, float]:
    names = sorted(p.name for p in (folder / "masks").iterdir() if p.suffix == ".png")
    dice, predicted, true = [], 0, 0
    for name in names:
        truth = torch.from_numpy(read_mask(folder / "masks" / name))
        mask = torch.from_numpy(model.predict(str(folder / "images" / name)).masks["lungs"])
        dice.append(float(per_image_dice(mask[None, None], truth[None, None])[0, 0]))
        predicted, true = predicted + int(mask.sum()), true + int(truth.sum())
    return {
        "images": len(names),
        "dice_mean": float(statistics.mean(dice)),
        "dice_median": float(statistics.median(dice)),
        "area_ratio": predicted / true,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = {}
    for run in args.runs:
        model = mm.load(run)
        results[run.name] = {f.name: folder_figures(model, f) for f in args.data}
        print(run.name, json.dumps(results[run.name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"runs": [str(r) for r in args.runs], "data": [str(d) for d in args.data]}
    settings["cpu"] = cpu_model()
    args.out.write_text(json.dumps({"settings": settings, "results": results}, indent=1))


if __name__ == "__main__":
    main()
