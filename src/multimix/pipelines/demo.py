"""``multimix demo``: the whole system on data it makes itself, in a few minutes on a laptop.

Three phantom sources play the roles of the real ones: a classification source with labels and
no masks, a segmentation source with lung masks, and a differently styled (pediatric) source
that is never trained on, for a cross-domain check.
"""

from __future__ import annotations

import json
from pathlib import Path

from multimix.config import TrainConfig
from multimix.core.atomic import atomic_write_text
from multimix.core.progress import console
from multimix.data.phantom import write_source
from multimix.engine.trainer import resume, train
from multimix.pipelines.evaluate import evaluate_run
from multimix.report.build import build_report


def make_demo_data(root: Path, seed: int) -> dict[str, Path]:
    specs = {
        "phantom_class": dict(count=600, mask_fraction=0.0, style="adult"),
        "phantom_seg": dict(count=240, mask_fraction=1.0, style="adult"),
        "phantom_pediatric": dict(count=120, mask_fraction=1.0, style="pediatric"),
    }
    paths = {}
    for i, (name, spec) in enumerate(specs.items()):
        path = root / name
        if not (path / "labels.csv").exists():
            console.print(f"writing {spec['count']} phantom images to {path}")
            write_source(path, seed=seed + i, size=256, **spec)
        paths[name] = path
    return paths


def run_demo(out: Path, minutes: float, seed: int) -> Path:
    out = Path(out)
    data = make_demo_data(out / "data", seed)
    run = out / "run"
    cfg = TrainConfig(
        out=str(run),
        method="multimix",
        class_data=[str(data["phantom_class"])],
        seg_data=[str(data["phantom_seg"])],
        labeled_class=100,
        labeled_seg=10,
        image_size=128,
        max_minutes=minutes,
        val_every=40,
        seed=seed,
    )
    if (run / "checkpoints" / "last.safetensors").exists():
        resume(run)  # an interrupted demo picks up where it stopped
    else:
        train(cfg)
    folders = [str(data[n]) for n in ("phantom_class", "phantom_seg", "phantom_pediatric")]
    metrics, kept = evaluate_run(run, folders, keep=True, explain=("saliency", "gradcam"))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    report = build_report(out, run, metrics, kept)
    console.print(f"metrics: {out / 'metrics.json'}\nreport:  {report}")
    return report
