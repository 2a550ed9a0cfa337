"""Explanations as labels: attribution maps of a trained classifier become pseudo-masks.

A classifier trained on image labels alone already attends to the lungs; its attribution map,
smoothed, thresholded to a plausible lung area and cleaned, is a rough lung mask that can
pre-train the segmentation decoder before it sees the few real masks. The pseudo-masks are
written in the shared folder layout, so they load through the normal data layer.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from multimix.core.atomic import atomic_write_text
from multimix.core.errors import ConfigError
from multimix.core.progress import progress_bar
from multimix.data.bank import load_bank
from multimix.data.io import write_png
from multimix.data.sources import Record, load_source


@dataclass(frozen=True)
class MaskRecipe:
    """How an attribution map becomes a mask."""

    area: float = 0.3  # share of the image kept: about the lungs' share of a frontal radiograph
    sigma: float = 0.03  # Gaussian smoothing, as a fraction of the image side
    components: int = 2  # keep this many largest connected regions (two lungs)


def attribution_to_mask(attr: np.ndarray, recipe: MaskRecipe = MaskRecipe()) -> np.ndarray:
    """Smooth, keep the top ``area`` share, fill holes, keep the largest components."""
    if not 0 < recipe.area < 1:
        raise ConfigError("pseudo-mask area must lie in (0, 1)")
    smooth = ndimage.gaussian_filter(attr.astype(np.float32), sigma=recipe.sigma * attr.shape[0])
    if smooth.max() <= smooth.min():
        return np.zeros(attr.shape, dtype=bool)
    mask = smooth >= np.quantile(smooth, 1.0 - recipe.area)
    mask = ndimage.binary_opening(mask, iterations=2)
    labels, count = ndimage.label(mask)
    if count > recipe.components:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        keep = 1 + np.argsort(sizes)[::-1][: recipe.components]
        mask = np.isin(labels, keep)
    return ndimage.binary_fill_holes(mask)


def pseudo_mask_records(folder: str, split: dict, part: str) -> list[Record]:
    """Images of ``folder`` safe to use: never the run's val/test images of a training source."""
    source = load_source(folder)
    info = split["sources"].get(source.name)
    if part == "all" or info is None or Path(info["root"]) != source.root.resolve():
        return list(source.records)
    names = set(info["train"])
    return [r for r in source.records if r.name in names]


def write_pseudo_masks(
    run: Path,
    folders: list[str],
    out: Path,
    method: str = "ig",
    part: str = "train",
    limit: int | None = None,
    recipe: MaskRecipe = MaskRecipe(),
    batch_size: int = 16,
    device: str = "auto",
    seed: int = 0,
) -> int:
    """Write ``out/images``, ``out/masks`` and ``out/meta.csv``; returns the number written."""
    from multimix.data.assemble import load_split
    from multimix.engine.evaluate import load_run
    from multimix.engine.runtime import select_device
    from multimix.explain.attributions import explain

    dev = select_device(device)
    cfg, model = load_run(run, device=dev)
    model.eval()
    split = load_split(Path(run) / "split.json")
    records = [r for f in folders for r in pseudo_mask_records(f, split, part)]
    if limit is not None and limit < len(records):
        order = np.random.default_rng(seed).permutation(len(records))[:limit]
        records = [records[i] for i in sorted(order)]
    if not records:
        raise ConfigError("no images to make pseudo-masks from")
    bank = load_bank(records, cfg.image_size, (), None, "loading images")
    out = Path(out)
    meta = io.StringIO()
    writer = csv.writer(meta)
    writer.writerow(["image", "patient_id", "source", "original", "method"])
    with progress_bar(f"pseudo-masks ({method})", total=len(bank)) as advance:
        for start in range(0, len(bank), batch_size):
            x = bank.float_images(torch.arange(start, min(start + batch_size, len(bank))))
            attr = explain(model, x.to(dev), method).cpu().numpy()[:, 0]
            for i, a in enumerate(attr):
                rec = bank.records[start + i]
                name = f"{rec.source}__{Path(rec.name).stem.replace('/', '_')}.png"
                write_png(out / "images" / name, bank.images[start + i, 0].numpy())
                write_png(out / "masks" / name, attribution_to_mask(a, recipe))
                writer.writerow([name, f"{rec.source}:{rec.patient}", rec.source, rec.name, method])
                advance()
    atomic_write_text(out / "meta.csv", meta.getvalue())
    atomic_write_text(
        out / "SOURCE.md",
        f"Pseudo-masks from {method} attributions of run {run} ({len(bank)} images).\n",
    )
    return len(bank)
