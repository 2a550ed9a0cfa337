"""Explanations as labels (DoLL): does pre-training on IG pseudo-masks help with few real masks?

    python benchmarks/doll.py --data ../shared/data --out benchmarks/results

1. A classifier (method ``enc``) trained on all kermany_pneumonia labels (reused from the
   label-efficiency benchmark when it is there).
2. Integrated Gradients pseudo-masks for kermany training images (the classification source).
3. ``unet`` on covid_ieee8023 with 10 and 50 real masks, with and without pre-training on the
   pseudo-masks, the same wall-clock budget each (pre-training included).
4. As a diagnostic, pseudo-masks of covid training images are scored against their real masks.
Writes doll.json, doll.md and doll_examples.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

LABEL_MAP = "covid=pneumonia,ards=pneumonia"


def multimix(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "multimix", *map(str, args)], check=True)


def classifier(args) -> Path:
    reused = args.out / "runs" / "enc-call-m0"
    if (reused / "checkpoints" / "best.safetensors").exists():
        return reused
    run = args.out / "doll" / "classifier"
    if not (run / "checkpoints" / "best.safetensors").exists():
        kermany = args.data / "kermany_pneumonia"
        multimix(
            "train", "--out", run, "--method", "enc", "--class-data", kermany,
            "--labeled-class", "all", "--image-size", args.image_size,
            "--max-minutes", args.minutes, "--seed", args.seed,
        )  # fmt: skip
    return run


def pseudo_masks(args, run: Path, source: str, limit: int) -> Path:
    out = args.out / "doll" / f"pseudo_{args.explainer}_{source}"
    if not (out / "meta.csv").exists():
        multimix(
            "pseudo-masks", run, "--data", args.data / source, "--out", out,
            "--method", args.explainer, "--limit", limit, "--area", args.area,
        )  # fmt: skip
    return out


def pseudo_mask_dice(args, folder: Path) -> float:
    """Mean Dice of pseudo-masks of covid images against their real (resized) lung masks."""
    from multimix.data.io import read_mask, resize_mask

    real = args.data / "covid_ieee8023" / "masks"
    scores = []
    for path in sorted((folder / "masks").glob("*.png")):
        name = path.name.split("__", 1)[1]
        if (real / name).exists():
            pseudo = read_mask(path)
            truth = resize_mask(read_mask(real / name), pseudo.shape[0])
            inter = (pseudo & truth).sum()
            scores.append(2 * inter / max(1, pseudo.sum() + truth.sum()))
    return float(np.mean(scores)) if scores else float("nan")


def segmentation_run(args, masks: int, pretrain: Path | None) -> dict:
    name = f"unet-m{masks}-{'pretrained' if pretrain else 'scratch'}"
    run = args.out / "doll" / name
    metrics = run / "test_metrics.json"
    covid = args.data / "covid_ieee8023"
    if not metrics.exists():
        if (run / "checkpoints" / "last.safetensors").exists():
            multimix("train", "--resume", run)
        else:
            cmd = [
                "train", "--out", run, "--method", "unet", "--seg-data", covid,
                "--labeled-seg", masks, "--image-size", args.image_size,
                "--max-minutes", args.minutes, "--seed", args.seed, "--val-every", 50,
            ]  # fmt: skip
            if pretrain:
                cmd += ["--pretrain-masks", pretrain, "--pretrain-fraction", args.fraction]
            multimix(*cmd)
        multimix("evaluate", run, "--data", covid, "--label-map", LABEL_MAP, "--out", metrics)
    seg = json.loads(metrics.read_text())["sources"]["covid_ieee8023"]["segmentation"]
    steps = sum(1 for _ in (run / "train_log.csv").open()) - 1
    return {"masks": masks, "pretrained": bool(pretrain), "steps": steps, **seg}


def examples_figure(folder: Path, path: Path, n: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    names = sorted((folder / "masks").glob("*.png"))[:n]
    fig, axes = plt.subplots(1, len(names), figsize=(2 * len(names), 2.3))
    for ax, mask_path in zip(np.atleast_1d(axes), names, strict=False):
        image = np.asarray(Image.open(folder / "images" / mask_path.name))
        ax.imshow(image, cmap="gray")
        ax.contour(np.asarray(Image.open(mask_path)) > 127, levels=[0.5], colors="red")
        ax.set_axis_off()
    fig.suptitle("Integrated-Gradients pseudo-masks (red) on kermany_pneumonia training images")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--explainer", default="ig")
    parser.add_argument("--limit", type=int, default=400, help="pseudo-masks to make")
    parser.add_argument("--area", type=float, default=0.3)
    parser.add_argument("--fraction", type=float, default=0.3, help="budget share pre-training")
    parser.add_argument("--masks", default="10,50")
    args = parser.parse_args()
    run = classifier(args)
    pseudo = pseudo_masks(args, run, "kermany_pneumonia", args.limit)
    check = pseudo_masks(args, run, "covid_ieee8023", 100)
    results = [
        segmentation_run(args, int(m), p) for m in args.masks.split(",") for p in (None, pseudo)
    ]
    diagnostic = pseudo_mask_dice(args, check)
    examples_figure(pseudo, args.out / "doll_examples.png")
    settings = {k: str(v) for k, v in vars(args).items()} | {"classifier": str(run)}
    report = {"settings": settings, "pseudo_mask_dice_on_covid": diagnostic, "results": results}
    (args.out / "doll.json").write_text(json.dumps(report, indent=1))
    lines = [
        "| real masks | pre-trained on pseudo-masks | steps | lung Dice | IoU | HD95 (px) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['masks']} | {'yes' if r['pretrained'] else 'no'} | {r['steps']} "
            f"| {r['dice']:.3f} | {r['iou']:.3f} | {r['hd95']:.1f} |"
        )
    lines.append(f"\nPseudo-mask Dice against real covid_ieee8023 lung masks: {diagnostic:.3f}")
    (args.out / "doll.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
