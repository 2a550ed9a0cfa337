"""Two CPU processes under torchrun train what one process trains on their combined batch.

With batch-coupling switched off (group norm, no dropout, no augmentation) the maths of DDP is
exact: every loss term is a per-image mean, rank r draws images r, r+2, ... of the same seeded
permutation, and DDP averages the two ranks' gradients, which is the gradient of the mean over
the combined batch. What remains is floating-point summation order: measured, the weights of
the two runs differ by at most 3.0e-7 after 4 steps, while those steps moved them by up to
4.8e-4 from their initial values; the tolerance (1e-5) sits between the two, so a run whose
gradients were not averaged (Adam moves each weight by about the learning rate whatever the
gradient's size) or whose ranks drew the wrong images would fail.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from multimix.config import TrainConfig
from multimix.data.augment import AugmentConfig
from multimix.engine.checkpoint import load_weights


def _config(tmp_path: Path, phantom_dirs, batch_size: int, norm: str = "group") -> Path:
    cfg = TrainConfig(
        out="set-by---out",
        class_data=[str(phantom_dirs["cls"])],
        seg_data=[str(phantom_dirs["seg"])],
        labeled_class=16,  # even pool sizes: both ranks' shards cover the same images
        labeled_seg=8,
        image_size=32,
        widths=[8, 16, 16, 32, 32],
        norm=norm,
        dropout=0.0,
        augment=AugmentConfig(flip=False, max_shift=0.0, max_scale=0.0, n_ops=0, cutout=0.0),
        batch_size=batch_size,
        steps=4,
        val_every=2,
        seed=0,
    )
    path = tmp_path / f"config-b{batch_size}-{norm}.json"
    path.write_text(cfg.to_json())
    return path


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MULTIMIX_NO_REEXEC": "1"}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _losses(run: Path) -> list[float]:
    with (run / "train_log.csv").open() as fh:
        return [float(row["loss"]) for row in csv.DictReader(fh)]


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_combined_batch(tmp_path, phantom_dirs):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(["-m", "multimix", "train", "--config", str(_config(tmp_path, phantom_dirs, 8)),
          "--out", str(one)], tmp_path)  # fmt: skip
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "multimix", "train", "--config", str(_config(tmp_path, phantom_dirs, 4)),
          "--out", str(two)], tmp_path)  # fmt: skip

    # Rank 0 alone writes: one log row per step, with the losses averaged over the ranks.
    assert len(_losses(two)) == 4
    torch.testing.assert_close(
        torch.tensor(_losses(two)), torch.tensor(_losses(one)), rtol=1e-4, atol=1e-5
    )
    a = load_weights(one / "checkpoints" / "last.safetensors").state_dict()
    b = load_weights(two / "checkpoints" / "last.safetensors").state_dict()
    # Adam moves a weight by about lr = 2e-3 a step, so a wrong combined batch shows at 1e-3.
    # oneDNN sums a convolution's gradient in an order that depends on the batch (4 against 8)
    # on some CPUs: on an AMX Xeon one weight in 13824 differed by 1.3e-5 after 4 steps.
    for key in a:
        torch.testing.assert_close(
            b[key], a[key], rtol=0, atol=5e-5, msg=lambda m, k=key: f"{k}: {m}"
        )
    # The checkpoint remembers both ranks' generators, so the run resumes on 2 processes.
    state = torch.load(two / "checkpoints" / "last.state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["other_ranks"]) == 1


@pytest.mark.slow
def test_default_batch_norm_network_trains_under_torchrun(tmp_path, phantom_dirs):
    """Batch norm couples the images of a rank, so no equality here: the traced saliency and
    DDP's gradient hooks work together, and rank 0 logs every step and checkpoints."""
    run = tmp_path / "bn"
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "multimix", "train", "--config", str(_config(tmp_path, phantom_dirs, 4, "batch")),
          "--out", str(run)], tmp_path)  # fmt: skip
    losses = _losses(run)
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    weights = load_weights(run / "checkpoints" / "last.safetensors").state_dict()
    assert any("running_var" in key for key in weights)
