"""Time the training steps of trainers built by ``engine.trainer.Trainer``, side by side.

Shared by the step benchmarks (``multilabel_step.py``, ``joint_step_cost.py``). Each step is
the trainer's own (its method, streams, model, optimizer and precision) on one fixed drawn
batch, so timing it measures the arithmetic; the draw of a batch (sampling, augmentation) is
timed apart. Settings alternate within each round, so a shared machine's drift touches all
alike.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser, threads: int, precision: str) -> None:
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--precision", default=precision, help="auto, fp32 or bf16")


def build_trainers(configs: dict) -> dict:
    """``{name: TrainConfig}`` -> ``{name: Trainer}``, each in its own (new) run folder."""
    from multimix.engine.trainer import Trainer

    out = {}
    for name, cfg in configs.items():
        Path(cfg.out).mkdir()
        cfg.save(Path(cfg.out))
        out[name] = Trainer(cfg)
    return out


def step_calls(trainer) -> tuple[Callable[[], None], Callable[[], object], dict[str, int]]:
    """(step, draw, rows per stream) for ``trainer``: the step runs forward, loss, backward,
    optimizer and the method's after-step hook on one fixed batch; rows count every view."""
    from multimix.engine.runtime import autocast

    t = trainer
    method = t.pretrain[0] if t.pretrain else t.method
    batch = t.streams.draw(method.streams).to(t.device)
    rows = {s: len(d) * len(d.views) for s, d in batch.items()}

    def step() -> None:
        t.model.train()
        with autocast(t.device, t.precision):
            loss, _ = method.loss(t.model, batch, 0)
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t.optimizer.step()
        method.after_step(t.model, 0)

    return step, lambda: t.streams.draw(method.streams), rows


def time_trainers(build: Callable, args: argparse.Namespace, profile: Iterable[str]) -> dict:
    """Build the trainers (``build(root, size, batch, precision) -> {name: TrainConfig}``) in
    a scratch folder, time every step and draw in ``args.rounds`` rounds, count each step's
    FLOPs and profile the steps named in ``profile``."""
    import torch

    from multimix.engine.measure import count_flops, environment, profile_operators, time_rounds
    from multimix.engine.runtime import compute_settings

    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp, compute_settings(args.threads, cpu):
        built = build_trainers(build(Path(tmp), args.size, args.batch_size, args.precision))
        calls, rows = {}, {}
        for name, t in built.items():
            calls[f"{name}/step"], calls[f"{name}/draw"], rows[name] = step_calls(t)
        timings = time_rounds(calls, lambda: None, 1, args.rounds, None)
        return {
            "names": list(built),
            "timings": timings,
            "rows": rows,
            "gflops": {n: count_flops(calls[f"{n}/step"]) / 1e9 for n in built},
            "profiles": {n: profile_operators(calls[f"{n}/step"], 2, cpu, 12) for n in profile},
            "precision": {n: t.precision for n, t in built.items()},
            "environment": environment(cpu),
        }
