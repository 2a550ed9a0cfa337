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
import tempfile
from pathlib import Path

os.environ.setdefault("MULTIMIX_NO_REEXEC", "1")

FINDINGS = ["cardiomegaly", "effusion", "nodule", "opacity"]


def trainers(root: Path, size: int, batch: int, precision: str) -> dict:
    from multimix.config import TrainConfig
    from multimix.data.phantom import write_source
    from multimix.engine.trainer import Trainer

    ml = write_source(root / "ml", 64, seed=3, size=size, multilabel=True, label_noise=0.2)
    cls = write_source(root / "cls", 64, seed=11, size=size, mask_fraction=0.0)
    seg = write_source(root / "seg", 48, seed=12, size=size, mask_fraction=1.0)
    common = {"image_size": size, "batch_size": batch, "steps": 1, "precision": precision}
    configs = {
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
    out = {}
    for name, cfg in configs.items():
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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()

    import torch

    from multimix.engine.measure import count_flops, environment, profile_operators, time_rounds
    from multimix.engine.runtime import autocast, compute_settings

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp, compute_settings(args.threads, cpu):
        built = trainers(Path(tmp), args.size, args.batch_size, args.precision)
        calls, sizes, batches = {}, {}, {}
        for name, t in built.items():
            method = t.pretrain[0] if t.pretrain else t.method
            batch = t.streams.draw(method.streams).to(t.device)
            batches[name] = batch
            sizes[name] = {s: len(d) * len(d.views) for s, d in batch.items()}

            def step(t=t, method=method, batch=batch) -> None:
                t.model.train()
                with autocast(t.device, t.precision):
                    loss, _ = method.loss(t.model, batch, 0)
                t.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                t.optimizer.step()

            calls[f"{name}/step"] = step
            calls[f"{name}/draw"] = lambda t=t, m=method: t.streams.draw(m.streams)
        timings = time_rounds(calls, lambda: None, 1, args.rounds, None)
        flops = {name: count_flops(calls[f"{name}/step"]) / 1e9 for name in built}
        profiles = {name: profile_operators(calls[f"{name}/step"], 2, cpu, 12) for name in built}
        env = environment(cpu)

    result: dict = {
        "config": vars(args) | {"out": str(args.out)},
        "environment": env,
        "images_per_step": {name: sum(s.values()) for name, s in sizes.items()},
        "images_per_stream": sizes,
        "timings": {k: t.summary() for k, t in timings.items()},
        "step_gflops": flops,
        "profile": profiles,
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
