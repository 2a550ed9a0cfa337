"""What a multi-label step with segmentation and localization costs against a MultiMix step.

    python benchmarks/multilabel_step.py --out benchmarks/results            # the reported run
    python benchmarks/multilabel_step.py --out /tmp/ms --size 64 --rounds 2  # a smoke check

Both steps are built by the trainer itself (``engine.trainer.Trainer``) on phantom folders at
``--size`` px with the same ``--batch-size`` per stream and the default network, so the model,
method, streams and augmentation are those of ``multimix train``. Each round times, for each
setting, the draw of a batch (the data side: sampling, augmentation, zone maps) and the step on a
fixed drawn batch (forward, loss, backward, optimizer) apart, settings alternating, so a shared
machine's drift touches both alike. Then each step is profiled (torch.profiler, CPU) and the FLOPs
are counted. Writes multilabel_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from trainer_steps import add_arguments, time_trainers

os.environ.setdefault("MULTIMIX_NO_REEXEC", "1")

FINDINGS = ["cardiomegaly", "effusion", "nodule", "opacity"]
SETTINGS = ("multilabel seg+loc", "multilabel alone", "multimix")  # every one is profiled


def configs(root: Path, size: int, batch: int, precision: str) -> dict:
    from multimix.config import TrainConfig
    from multimix.data.phantom import write_source

    ml = write_source(root / "ml", 64, seed=3, size=size, multilabel=True, label_noise=0.2)
    cls = write_source(root / "cls", 64, seed=11, size=size, mask_fraction=0.0)
    seg = write_source(root / "seg", 48, seed=12, size=size, mask_fraction=1.0)
    common = {"image_size": size, "batch_size": batch, "steps": 1, "precision": precision}
    return {
        "multilabel seg+loc": TrainConfig(
            out=str(root / "run_ml"), task="multilabel", method="multilabel",
            class_data=[str(ml)], seg_data=[str(ml)], classes=FINDINGS,
            task_options={"aux": ["segmentation", "localization"]}, **common,
        ),
        "multilabel alone": TrainConfig(
            out=str(root / "run_ml0"), task="multilabel", method="multilabel",
            class_data=[str(ml)], classes=FINDINGS, task_options={"aux": []}, **common,
        ),
        "multimix": TrainConfig(
            out=str(root / "run_mm"), method="multimix", class_data=[str(cls)],
            seg_data=[str(seg)], **common,
        ),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, threads=2, precision="fp32")
    args = parser.parse_args()
    m = time_trainers(configs, args, profile=SETTINGS)
    built, timings, sizes, flops = m["names"], m["timings"], m["rows"], m["gflops"]

    result: dict = {
        "config": vars(args) | {"out": str(args.out)},
        "environment": m["environment"],
        "images_per_step": {name: sum(s.values()) for name, s in sizes.items()},
        "images_per_stream": sizes,
        "timings": {k: t.summary() for k, t in timings.items()},
        "step_gflops": flops,
        "profile": m["profiles"],
    }
    step = {name: timings[f"{name}/step"].median for name in built}
    draw = {name: timings[f"{name}/draw"].median for name in built}
    base = "multimix"
    result["step_over_multimix"] = {n: step[n] / step[base] for n in built}
    result["step_and_draw_over_multimix"] = {
        n: (step[n] + draw[n]) / (step[base] + draw[base]) for n in built
    }
    result["seconds_per_image"] = {n: step[n] / result["images_per_step"][n] for n in built}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multilabel_step.json").write_text(json.dumps(result, indent=2))
    for n in built:
        print(
            f"{n}: step {step[n]:.4f} s, draw {draw[n]:.4f} s, "
            f"{result['images_per_step'][n]} images, {flops[n]:.2f} GFLOP, "
            f"step/multimix {result['step_over_multimix'][n]:.3f}"
        )


if __name__ == "__main__":
    main()
