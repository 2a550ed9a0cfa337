"""Where lung Dice is lost: predicted against true lung area, per run and folder.

    python benchmarks/mask_area.py --runs RUN [RUN ...] --data FOLDER [FOLDER ...] --out F.json

Writes ``F.json`` and the same figures as a table in ``F.md``.

A Dice below 1 is either too much lung, too little, or lung in the wrong place. The ratio of
predicted to true lung pixels (summed over a folder) tells the first two apart: a model that
outlines the whole lung field where a folder's masks mark less scores a ratio well above 1.
Every image of each folder that has a mask is used, through the API (``multimix.api``), so the
masks are the ones ``predict`` returns (post-processing included).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

import multimix.api as mm
from multimix.data.io import read_mask
from multimix.metrics.segmentation import per_image_dice
from run_results import folder_table, score_folders


def folder_figures(model: mm.Model, run: Path, folder: Path) -> dict[str, float]:
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


def table(results: dict[str, dict[str, dict]]) -> str:
    """One row per run and folder: images, mean and median Dice, predicted over true area."""
    header = ["images", "Dice, mean", "Dice, median", "predicted / true lung area"]

    def cells(f: dict) -> list[str]:
        return [str(f["images"]), f"{f['dice_mean']:.4f}", f"{f['dice_median']:.4f}",
                f"{f['area_ratio']:.3f}"]  # fmt: skip

    return folder_table(results, header, cells)


def main() -> None:
    score_folders(__doc__, folder_figures, table)


if __name__ == "__main__":
    main()
