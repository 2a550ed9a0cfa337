"""A training process stopped by a signal resumes to the same weights as an uninterrupted run.

SIGKILL gives no chance to clean up (the last regular checkpoint is where it resumes); SIGTERM
is acted on between two steps, so its checkpoint holds whole steps and the result is bit-exact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from multimix.config import TrainConfig
from multimix.engine.checkpoint import load_weights

STEPS = 40


def _config(tmp_path: Path, phantom_dirs) -> Path:
    cfg = TrainConfig(
        out="set-by---out",
        class_data=[str(phantom_dirs["cls"])],
        seg_data=[str(phantom_dirs["seg"])],
        labeled_class=12,
        labeled_seg=6,
        image_size=32,
        widths=[8, 16, 16, 32, 32],
        batch_size=6,
        steps=STEPS,
        val_every=5,
        seed=0,
    )
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    return path


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "multimix", "train", *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MULTIMIX_NO_REEXEC": "1"}


def _logged_steps(run: Path) -> int:
    log = run / "train_log.csv"
    return max(0, len(log.read_text().splitlines()) - 1) if log.exists() else 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_signal_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path, phantom_dirs, sig):
    config = _config(tmp_path, phantom_dirs)
    ref, run = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_command("--config", str(config), "--out", str(ref)), env=ENV, check=True,
                   capture_output=True, timeout=600)  # fmt: skip

    proc = subprocess.Popen(
        _command("--config", str(config), "--out", str(run)),
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while _logged_steps(run) < 12 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(sig)
    code = proc.wait()
    if sig == signal.SIGTERM:
        assert code == 130  # stopped cleanly after the step in progress, checkpoint written
    killed_at = _logged_steps(run)
    assert 12 <= killed_at < STEPS

    resumed = subprocess.run(_command("--resume", str(run)), env=ENV, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_weights(ref / "checkpoints" / "last.safetensors").state_dict()
    b = load_weights(run / "checkpoints" / "last.safetensors").state_dict()
    for key in a:
        assert torch.equal(b[key], a[key]), key
    # The log holds each step once: rows after the checkpoint that was resumed were replaced.
    steps = [line.split(",")[0] for line in (run / "train_log.csv").read_text().split()[1:]]
    assert steps == [str(i) for i in range(1, STEPS + 1)]
