"""Stop a run between two steps (as SIGTERM or Ctrl-C do), resume it, compare with a full run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multimix.config import TrainConfig
from multimix.engine.checkpoint import load_weights
from multimix.engine.trainer import Trainer, resume


def stop_then_resume(cfg: TrainConfig, stop_after: int, check=None) -> Path:
    """Train ``cfg`` until ``stop_after`` steps, stop as a signal would, then resume to the end.

    ``check(trainer)``, if given, runs on the trainer before it trains.
    """
    run = Path(cfg.out)
    run.mkdir(parents=True)
    cfg.save(run)
    trainer = Trainer(cfg)
    if check is not None:
        check(trainer)
    step = trainer._train_step

    def stopping(advance, start):
        step(advance, start)
        trainer.stop.requested = trainer.step == stop_after

    trainer._train_step = stopping
    with pytest.raises(SystemExit):
        trainer.fit()
    resume(run)
    return run


def assert_same_weights(a: Path, b: Path) -> None:
    """The last checkpoints of two runs are bit for bit equal."""
    wa = load_weights(a / "checkpoints" / "last.safetensors").state_dict()
    wb = load_weights(b / "checkpoints" / "last.safetensors").state_dict()
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
