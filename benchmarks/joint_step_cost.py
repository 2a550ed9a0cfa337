"""What each stream and view of a ``multimix`` step costs, against the ablations' steps.

    python benchmarks/joint_step_cost.py --out benchmarks/results              # the reported run
    python benchmarks/joint_step_cost.py --out /tmp/jc --size 64 --rounds 1    # a smoke check

The label-efficiency benchmark compares methods at equal CPU minutes, so a joint step that
costs k times a U-Net step must learn k times as much per step. This says where the k comes
from. Every step is built by the trainer itself (``engine.trainer.Trainer``) on phantom
folders, so model, method, streams and augmentation are those of ``multimix train``; each
round times each setting's step on a fixed drawn batch (forward, loss, backward, optimizer)
and its draw (sampling and augmentation) apart, settings alternating so a shared machine's
drift touches all alike. CPU seconds per call are the figures (they barely move when other
jobs share the machine; one thread, so CPU time is the work). The marginal costs:

* the unlabeled stream: ``multimix`` at ``--unlabeled-ratio 2`` minus ``multimix``, i.e. 8 more
  unlabeled images, each in its weak and strong view, through the encoder and the decoder;
* the labeled class stream: ``enc``'s step (8 images through the encoder and the head);
* the masked stream: ``unet``'s step (8 images through encoder and decoder, no bridge);
* the EMA teacher: ``multimix --teacher ema`` minus ``multimix``: the teacher's forward on the
  weak views, less the student's weak rows, which leave its pass (they would feed no loss).

Writes joint_step_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from trainer_steps import add_arguments, time_trainers

os.environ.setdefault("MULTIMIX_NO_REEXEC", "1")

SETTINGS = {
    "unet": {"method": "unet"},
    "enc": {"method": "enc"},
    "multimix": {"method": "multimix"},
    "multimix, unlabeled ratio 2": {"method": "multimix", "unlabeled_ratio": 2},
    "multimix, teacher ema": {"method": "multimix", "method_options": {"teacher": "ema"}},
    "multimix-paper": {"method": "multimix-paper"},
}


def configs(root: Path, size: int, batch: int, precision: str) -> dict:
    from multimix.config import TrainConfig
    from multimix.data.phantom import write_source

    cls = write_source(root / "cls", 64, seed=11, size=size, mask_fraction=0.0)
    seg = write_source(root / "seg", 48, seed=12, size=size, mask_fraction=0.5)
    common = {"image_size": size, "batch_size": batch, "steps": 1, "precision": precision}
    return {
        name: TrainConfig(
            out=str(root / f"run{i}"), class_data=[str(cls)], seg_data=[str(seg)],
            **common, **extra,
        )
        for i, (name, extra) in enumerate(SETTINGS.items())
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, threads=1, precision="auto")
    args = parser.parse_args()
    m = time_trainers(configs, args, profile=["multimix"])
    built, timings, rows, flops = m["names"], m["timings"], m["rows"], m["gflops"]

    step = {n: timings[f"{n}/step"].summary()["cpu_s"] for n in built}
    draw = {n: timings[f"{n}/draw"].summary()["cpu_s"] for n in built}
    mm = step["multimix"]
    marginal = {
        "unlabeled stream (8 images, weak + strong)": step["multimix, unlabeled ratio 2"] - mm,
        "labeled class stream (8 images): enc step": step["enc"],
        "masked stream (8 images): unet step": step["unet"],
        "EMA teacher (its forward, less the student's weak rows)": (
            step["multimix, teacher ema"] - mm
        ),
    }
    result = {
        "config": vars(args) | {"out": str(args.out)},
        "environment": m["environment"],
        "precision": m["precision"],
        "rows_per_stream": rows,
        "timings": {k: t.summary() for k, t in timings.items()},
        "step_cpu_s": step,
        "draw_cpu_s": draw,
        "step_over_unet": {n: step[n] / step["unet"] for n in built},
        "step_gflops": flops,
        "marginal_cpu_s": marginal,
        "marginal_share_of_multimix": {k: v / mm for k, v in marginal.items()},
        "gflops_per_cpu_s": {n: flops[n] / step[n] for n in built},
        "draw_share_of_step": {n: draw[n] / step[n] for n in built},
        # FLOPs left for the unlabeled stream (weak + strong views, saliency walk, bridge)
        # once the masked stream (unet's step) and the class stream (enc's) are taken out.
        "unlabeled_gflops_share": (flops["multimix"] - flops["unet"] - flops["enc"])
        / flops["multimix"],
        "ema_over_self_step": step["multimix, teacher ema"] / mm,
        "multimix_profile": m["profiles"]["multimix"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "joint_step_cost.json").write_text(json.dumps(result, indent=2))
    for n in built:
        print(
            f"{n}: step {step[n]:.4f} CPU s, draw {draw[n]:.4f} CPU s, rows {rows[n]}, "
            f"{flops[n]:.2f} GFLOP, step/unet {result['step_over_unet'][n]:.3f}"
        )
    for k, v in marginal.items():
        print(f"{k}: {v:.4f} CPU s ({v / mm:.3f} of a multimix step)")


if __name__ == "__main__":
    main()
