"""``multimix bench``: the JSON it writes, and the straightforward step it compares against."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from multimix.cli.app import app
from multimix.engine import measure
from multimix.engine.bench import (
    BenchConfig,
    build,
    images_per_step,
    straightforward_loss,
    synthetic_batch,
    train_step,
)
from multimix.engine.runtime import GLIBC_TUNABLES
from multimix.methods.base import LossWeights, get_method

TINY = BenchConfig(image_size=32, batch_size=2, widths=(4, 8, 8, 16, 16))
FIGURES = (
    "peak_gflops", "train_images_per_s", "train_share_of_peak", "gflops_per_image",
    "straightforward_train_images_per_s", "straightforward_share_of_peak",
    "straightforward_gflops_per_image", "train_speedup", "train_flop_ratio",
    "infer_images_per_s", "infer_share_of_peak", "infer_gflops_per_image",
)  # fmt: skip


def test_bench_command_writes_consistent_figures(tmp_path):
    """Through ``python -m multimix`` as a user runs it, so the allocator re-exec applies too."""
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("MULTIMIX_NO_REEXEC", "GLIBC_TUNABLES")}
    args = [
        "bench", "--image-size", "64", "--batch-size", "1", "--infer-batch-size", "2",
        "--widths", "8,16,16,32,32", "--warmup", "0", "--steps", "2", "--matmul-size", "128",
        "--matmul-repeats", "2", "--threads", "1", "--profile-steps", "1", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "multimix", *args], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    for key in FIGURES:
        assert math.isfinite(r[key]) and r[key] > 0, key
    peak = r["peak_gflops"]
    assert peak == max(r["peak_gflops_by_library"].values())
    assert peak == max(r["peak_gflops_before_after"])
    assert r["train_share_of_peak"] == pytest.approx(
        r["train_images_per_s"] * r["gflops_per_image"] / peak
    )
    assert r["straightforward_share_of_peak"] == pytest.approx(
        r["straightforward_train_images_per_s"] * r["straightforward_gflops_per_image"] / peak
    )
    assert r["infer_share_of_peak"] == pytest.approx(
        r["infer_images_per_s"] * r["infer_gflops_per_image"] / peak
    )
    assert r["train_speedup"] == pytest.approx(
        r["train_images_per_s"] / r["straightforward_train_images_per_s"]
    )
    # The baseline does strictly more work: a second encoder pass, the decoder on every image.
    assert r["train_flop_ratio"] > 1
    timings = r["timings"]
    assert r["train_images_per_s"] == pytest.approx(5 / timings["train"]["median_s"])
    assert r["infer_images_per_s"] == pytest.approx(2 / timings["infer"]["median_s"])
    assert all(t["n"] == 2 for t in timings.values())
    assert r["config"]["image_size"] == 64 and r["config"]["train_images_per_step"] == 5
    assert r["environment"]["glibc_tunables"] == GLIBC_TUNABLES
    assert r["environment"]["threads"] == 1
    assert r["train_profile"] and all(0 < op["share"] <= 1 for op in r["train_profile"])
    assert "of peak" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image-size", "100"], "--image-size must be a multiple of 16 for a 5-level network"),
        (["--widths", "8,x"], "--widths must be numbers separated by commas, not '8,x'"),
        (["--norm", "foo"], "unknown --norm 'foo'; choose one of batch, instance, group, none"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--device", "tpu"], "unknown --device 'tpu'; use auto, cpu or cuda"),
    ],
)
def test_bench_rejects_bad_options_in_one_line(tmp_path, args, message):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", *args, "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {message}"
    assert not out.exists()


def _losses(straightforward: bool, train: bool) -> dict[str, float]:
    # Threshold 0 keeps every pseudo-label, so the pseudo-label term is not trivially zero.
    method = get_method("multimix-paper", LossWeights(threshold=0.0))
    setup = build(TINY, torch.device("cpu"))
    setup.model.train(train)
    batch = synthetic_batch(TINY).to(torch.device("cpu"))
    if straightforward:
        return straightforward_loss(method, setup.model, batch)[1]
    return method.loss(setup.model, batch)[1]


def test_straightforward_step_computes_the_same_loss_terms():
    # In eval mode no image depends on the others (no batch statistics, no dropout), so the
    # extra work of the straightforward step must not change any value.
    real, plain = _losses(False, train=False), _losses(True, train=False)
    assert set(real) == set(plain) == {
        "loss", "loss_seg", "loss_kl", "loss_cls", "train_acc", "loss_pseudo", "pseudo_kept",
    }  # fmt: skip
    assert plain["pseudo_kept"] == 1.0 and plain["loss_kl"] > 0
    for key in real:
        assert plain[key] == pytest.approx(real[key], rel=1e-4, abs=1e-6), key
    assert set(_losses(True, train=True)) == set(real)


def test_straightforward_step_encodes_twice_and_decodes_every_image():
    batch = synthetic_batch(TINY)
    n = images_per_step(batch)
    seen = {}
    for straightforward in (False, True):
        setup = build(TINY, torch.device("cpu"), straightforward)
        calls = {"encoder": [], "decoder": []}
        for part, rows in calls.items():
            getattr(setup.model, part).register_forward_hook(
                lambda m, i, o, rows=rows: rows.append(len(o[0] if isinstance(o, list) else o))
            )
        train_step(setup, batch)
        seen[straightforward] = calls
    assert n == 10  # 2 masks + 2 unlabeled for masks + 2 classes + 2 weak + 2 strong views
    assert seen[False] == {"encoder": [n], "decoder": [4]}
    assert seen[True] == {"encoder": [n, n], "decoder": [n]}


def test_flops_are_counted_per_call_and_grow_with_the_work():
    batch = synthetic_batch(TINY)
    real = measure.count_flops(lambda: train_step(build(TINY, torch.device("cpu")), batch))
    plain = measure.count_flops(lambda: train_step(build(TINY, torch.device("cpu"), True), batch))
    assert 0 < real < plain
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)
    x = torch.rand(2, 3, 8, 8)
    assert measure.count_flops(lambda: conv(x)) == 2 * (2 * 8 * 8) * 5 * 3 * 9


def test_time_calls_runs_warmup_then_steps_or_seconds(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])
    calls = []

    def work():
        calls.append(clock[0])
        clock[0] += 1.0

    timing = measure.time_calls(work, lambda: None, warmup=2, steps=3, seconds=None)
    assert len(calls) == 5 and timing.wall == [1.0, 1.0, 1.0]
    calls.clear()
    timing = measure.time_calls(work, lambda: None, warmup=0, steps=None, seconds=3.5)
    assert len(timing.wall) == 4  # until 3.5 s had passed
    assert timing.summary()["median_s"] == 1.0


def test_time_rounds_alternates_the_calls(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])
    order = []

    def work(name: str, cost: float):
        def call():
            order.append(name)
            clock[0] += cost

        return call

    timings = measure.time_rounds(
        {"a": work("a", 1.0), "b": work("b", 2.0)}, lambda: None, warmup=1, steps=2, seconds=None
    )
    assert order == ["a", "b"] * 3  # one warm-up round, then two timed ones
    assert timings["a"].wall == [1.0, 1.0] and timings["b"].wall == [2.0, 2.0]


def test_matmul_peak_is_measured_with_each_library_torch_uses_here():
    peaks = measure.matmul_peaks(torch.device("cpu"), 64, 2)
    assert "blas (torch.mm)" in peaks
    if torch.backends.mkldnn.is_available():  # the convolutions' library: its matmul counts
        assert "onednn (mkldnn_linear)" in peaks
    assert all(math.isfinite(v) and v > 0 for v in peaks.values())


def test_bench_measures_the_training_default_widths(monkeypatch, tmp_path):
    """Without ``--widths`` the bench times the network ``multimix train`` builds by default."""
    from multimix.config import TrainConfig
    from multimix.engine import bench as bench_module
    from multimix.models.backbones import DEFAULT_WIDTHS
    from multimix.models.net import ModelConfig

    seen = []

    def fake_write_bench(cfg, out, log):
        seen.append(cfg)
        return dict.fromkeys(FIGURES, 1.0)

    monkeypatch.setattr(bench_module, "write_bench", fake_write_bench)
    for extra, widths in (([], DEFAULT_WIDTHS), (["--widths", "8,16"], (8, 16))):
        result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "b.json"), *extra])
        assert result.exit_code == 0, result.output
        assert seen[-1].widths == widths
    assert tuple(TrainConfig(out=tmp_path).widths) == ModelConfig().widths == DEFAULT_WIDTHS
