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
import tempfile
from pathlib import Path

os.environ.setdefault("MULTIMIX_NO_REEXEC", "1")

SETTINGS = {
    "unet": {"method": "unet"},
    "enc": {"method": "enc"},
    "multimix": {"method": "multimix"},
    "multimix, unlabeled ratio 2": {"method": "multimix", "unlabeled_ratio": 2},
    "multimix, teacher ema": {"method": "multimix", "method_options": {"teacher": "ema"}},
    "multimix-paper": {"method": "multimix-paper"},
}


def trainers(root: Path, size: int, batch: int, precision: str) -> dict:
    from multimix.config import TrainConfig
    from multimix.data.phantom import write_source
    from multimix.engine.trainer import Trainer

    cls = write_source(root / "cls", 64, seed=11, size=size, mask_fraction=0.0)
    seg = write_source(root / "seg", 48, seed=12, size=size, mask_fraction=0.5)
    common = {"image_size": size, "batch_size": batch, "steps": 1, "precision": precision}
    out = {}
    for i, (name, extra) in enumerate(SETTINGS.items()):
        cfg = TrainConfig(
            out=str(root / f"run{i}"), class_data=[str(cls)], seg_data=[str(seg)],
            **common, **extra,
        )  # fmt: skip
        Path(cfg.out).mkdir()
        cfg.save(Path(cfg.out))
        out[name] = Trainer(cfg)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    args = parser.parse_args()

    import torch

    from multimix.engine.measure import count_flops, environment, profile_operators, time_rounds
    from multimix.engine.runtime import autocast, compute_settings

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp, compute_settings(args.threads, cpu):
        built = trainers(Path(tmp), args.size, args.batch_size, args.precision)
        calls, rows = {}, {}
        for name, t in built.items():
            method = t.pretrain[0] if t.pretrain else t.method
            batch = t.streams.draw(method.streams).to(t.device)
            rows[name] = {s: len(d) * len(d.views) for s, d in batch.items()}

            def step(t=t, method=method, batch=batch) -> None:
                t.model.train()
                with autocast(t.device, t.precision):
                    loss, _ = method.loss(t.model, batch, 0)
                t.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                t.optimizer.step()
                method.after_step(t.model, 0)

            calls[f"{name}/step"] = step
            calls[f"{name}/draw"] = lambda t=t, m=method: t.streams.draw(m.streams)
        timings = time_rounds(calls, lambda: None, 1, args.rounds, None)
        flops = {name: count_flops(calls[f"{name}/step"]) / 1e9 for name in built}
        profile = profile_operators(calls["multimix/step"], 2, cpu, 12)
        precision = {name: t.precision for name, t in built.items()}
        env = environment(cpu)

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
        "environment": env,
        "precision": precision,
        "rows_per_stream": rows,
        "timings": {k: t.summary() for k, t in timings.items()},
        "step_cpu_s": step,
        "draw_cpu_s": draw,
        "step_over_unet": {n: step[n] / step["unet"] for n in built},
        "step_gflops": flops,
        "marginal_cpu_s": marginal,
        "marginal_share_of_multimix": {k: v / mm for k, v in marginal.items()},
        "multimix_profile": profile,
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
