"""``--precision``: bf16 agrees with fp32 within stated tolerances, ``auto`` falls back to fp32
where bf16 is not supported (the probe simulated), checkpoints stay fp32 and load in either."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from multimix.cli.app import app
from multimix.core.errors import ConfigError
from multimix.engine import precision as prec
from multimix.engine.bench import BenchConfig, run_bench
from multimix.engine.checkpoint import load_weights
from multimix.engine.inference import predict
from multimix.models.backbones.base import EncoderTrace
from multimix.models.net import ModelConfig, MultiMixNet
from multimix.models.saliency import traced_saliency

CPU = torch.device("cpu")
WIDTHS = (8, 16, 16, 32, 32)


def _model() -> MultiMixNet:
    torch.manual_seed(0)
    return MultiMixNet(ModelConfig(widths=WIDTHS, bridge=True)).eval()


def _images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(4, 1, 64, 64, generator=g) * 255).to(torch.uint8)


def _agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Relative L2 error of ``b`` against ``a`` and their correlation over all pixels."""
    a, b = a.float().flatten(), b.float().flatten()
    return ((a - b).norm() / a.norm()).item(), torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def test_bf16_predictions_agree_with_fp32():
    model, images = _model(), _images()
    full = predict(model, images, CPU, keep_saliency=True, precision="fp32")
    half = predict(model, images, CPU, keep_saliency=True, precision="bf16")
    # Probabilities are computed in fp32 from the bf16 logits (about 3 significant digits).
    assert half.probs.dtype == torch.float32
    torch.testing.assert_close(half.probs, full.probs, rtol=0, atol=1e-3)
    torch.testing.assert_close(half.masks.float(), full.masks.float(), rtol=0, atol=5e-3)
    # The saliency is a gradient through bf16 convolutions, scaled per image in fp32: single
    # pixels move (up to ~0.4 of the map's maximum here), the map as a whole stays close
    # (measured: relative L2 error 0.19, correlation 0.97).
    assert half.saliency.amax().item() <= 1.0
    error, corr = _agreement(full.saliency, half.saliency)
    assert error < 0.3 and corr > 0.93, (error, corr)


def test_bf16_traced_saliency_stays_close_to_fp32():
    """The training step's saliency (walked back by hand) runs under autocast: its walk back
    casts to fp32, so the map is fp32; it differs from fp32 as the inference saliency does
    (measured: relative L2 error 0.27, correlation 0.92)."""
    model = _model().train()
    x = _images().float() / 255

    def traced(precision: str) -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout
        with prec.precision_context(precision, CPU):
            trace = EncoderTrace()
            feats = model.encode(x, trace)
            return traced_saliency(model.classify(feats), feats, trace, rows=4)

    full, half = traced("fp32"), traced("bf16")
    assert half.dtype == torch.float32
    assert torch.allclose(half.flatten(1).amax(1), torch.ones(4))  # scaled to max 1 each
    error, corr = _agreement(full, half)
    assert error < 0.4 and corr > 0.88, (error, corr)


def test_losses_stay_fp32_under_bf16_autocast():
    from multimix.methods.losses import bernoulli_kl, dice_bce, pseudo_label_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=g).bfloat16()
    target = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    known = torch.ones(2, 1, dtype=torch.bool)
    cls = torch.randn(4, 3, generator=g).bfloat16()
    with prec.precision_context("bf16", CPU):
        assert dice_bce(logits, target, known).dtype == torch.float32
        assert bernoulli_kl(logits, logits.flip(0)).dtype == torch.float32
        assert pseudo_label_loss(cls, cls.flip(0), 0.0)[0].dtype == torch.float32


def _machine(flags: list[str], speedup: dict[str, float], calls: list[int]):
    """A simulated CPU: its flags and what the calibration would measure."""

    def probe() -> dict[str, float]:
        calls.append(1)
        return speedup

    return {"flags": lambda: flags, "probe": probe}


def test_auto_falls_back_to_fp32_where_bf16_is_not_supported(monkeypatch, tmp_path):
    monkeypatch.delenv(prec.ENV, raising=False)
    calls: list[int] = []
    # No bf16 units: fp32, without calibrating.
    no_units = _machine(["avx2", "avx512f"], {"matmul": 9.0, "conv": 9.0}, calls)
    ok, reason = prec.detect_bf16(CPU, cache=False, **no_units)
    assert not ok and "no bf16 units" in reason and not calls
    # The flag, but bf16 no faster (emulated, or the casts eat the gain): fp32.
    slow = _machine(["avx512_bf16"], {"matmul": 1.9, "conv": 0.8}, calls)
    ok, reason = prec.detect_bf16(CPU, cache=False, **slow)
    assert not ok and "conv 0.80x" in reason and len(calls) == 1
    for machine in (no_units, slow):
        detect = lambda device, m=machine: prec.detect_bf16(device, cache=False, **m)  # noqa: E731
        assert prec.choose_precision("auto", CPU, detect)[0] == "fp32"
    # Supported: bf16; the verdict is cached per machine, so the second call does not probe.
    calls.clear()
    fast = _machine(["avx512_bf16", "amx_bf16"], {"matmul": 2.0, "conv": 1.5}, calls)
    cache = tmp_path / "precision.json"
    for _ in range(2):
        detect = lambda device: prec.detect_bf16(device, cache=cache, **fast)  # noqa: E731
        assert prec.choose_precision("auto", CPU, detect) == (
            "bf16",
            "auto: avx512_bf16+amx_bf16; bf16 over fp32: matmul 2.00x, conv 1.50x (faster)",
        )
    assert len(calls) == 1
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["speedup"] == {"matmul": 2.0, "conv": 1.5}


def test_precision_names_and_the_environment_pin(monkeypatch):
    never = lambda device: pytest.fail("an explicit or pinned precision must not probe")  # noqa: E731
    assert prec.choose_precision("fp32", CPU, never) == ("fp32", "asked for")
    assert prec.choose_precision("bf16", CPU, never) == ("bf16", "asked for")
    monkeypatch.setenv(prec.ENV, "bf16")
    assert prec.choose_precision("auto", CPU, never)[0] == "bf16"
    monkeypatch.setenv(prec.ENV, "fp32")
    assert prec.resolve_precision("auto", CPU) == "fp32"
    with pytest.raises(ConfigError, match=r"^unknown --precision 'fp16'; use auto, fp32 or bf16$"):
        prec.resolve_precision("fp16", CPU)
    monkeypatch.setenv(prec.ENV, "half")
    with pytest.raises(ConfigError, match="MULTIMIX_PRECISION"):
        prec.resolve_precision("auto", CPU)
    with prec.precision_context("bf16", CPU):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    with prec.precision_context("fp32", CPU):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32


def test_bf16_training_keeps_fp32_checkpoints_that_load_in_either_precision(phantom_dirs, tmp_path):
    run = tmp_path / "run"
    args = [
        "train", "--out", run, "--class-data", phantom_dirs["cls"], "--seg-data",
        phantom_dirs["seg"], "--image-size", "32", "--widths", "8,16,16,32,32",
        "--batch-size", "2", "--steps", "2", "--val-every", "2", "--precision", "bf16",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "precision bf16 (asked for)" in result.output
    saved = json.loads((run / "precision.json").read_text())
    assert saved["precision"] == "bf16" and saved["requested"] == "bf16"
    weights = load_file(run / "checkpoints" / "best.safetensors")
    floats = {v.dtype for v in weights.values() if v.is_floating_point()}
    assert floats == {torch.float32}
    state = torch.load(run / "checkpoints" / "last.state.pt", weights_only=False)
    moments = [t for s in state["optimizer"]["state"].values() for t in s.values()]
    assert {t.dtype for t in moments if t.is_floating_point() and t.dim()} == {torch.float32}
    model = load_weights(run / "checkpoints" / "best.safetensors")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    images = _images()[:, :, :32, :32].contiguous()
    full = predict(model, images, CPU, precision="fp32")
    half = predict(model, images, CPU, precision="bf16")
    torch.testing.assert_close(half.probs, full.probs, rtol=0, atol=1e-2)


def test_train_rejects_an_unknown_precision_in_one_line(phantom_dirs, tmp_path):
    args = ["train", "--out", str(tmp_path / "r"), "--class-data", str(phantom_dirs["cls"])]
    result = CliRunner().invoke(app, [*args, "--precision", "fp16"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: unknown --precision 'fp16'; use auto, fp32 or bf16"


def test_bench_times_both_precisions_in_the_same_rounds(monkeypatch):
    monkeypatch.setenv(prec.ENV, "bf16")  # auto picks bf16: its figures go to the top level
    cfg = BenchConfig(
        image_size=32, batch_size=1, infer_batch_size=2, widths=WIDTHS, warmup=0, steps=1,
        matmul_size=64, matmul_repeats=1, threads=1, precision="both",
    )  # fmt: skip
    threads = torch.get_num_threads()
    r = run_bench(cfg)
    assert r["environment"]["threads"] == 1 and torch.get_num_threads() == threads  # put back
    assert set(r["precisions"]) == {"fp32", "bf16"} and r["precision"] == "bf16"
    top = {k: v for k, v in r.items() if k in r["precisions"]["bf16"]}
    assert top == r["precisions"]["bf16"]
    assert set(r["precisions"]["fp32"]) == set(top)
    assert set(r["timings"]) == {"train", "straightforward", "infer"}
    for kind in ("train", "infer"):
        want = r["precisions"]["bf16"][f"{kind}_images_per_s"]
        want /= r["precisions"]["fp32"][f"{kind}_images_per_s"]
        assert r["bf16_over_fp32"][kind] == pytest.approx(want)
    assert next(iter(r["precisions"]["bf16"]["peak_gflops_by_library"])) == "blas (torch.mm)"
    env = r["environment"]
    assert env["precision"] == "bf16" and isinstance(env["cpu_flags"], list) and env["cpu"]
    monkeypatch.setenv(prec.ENV, "fp32")  # auto picks fp32: the default times fp32 alone
    cfg.precision = None
    r = run_bench(cfg)
    assert set(r["precisions"]) == {"fp32"} and "bf16_over_fp32" not in r


def _fp32_gradients() -> list[torch.Tensor]:
    model = _model().train()
    x = _images().float() / 255
    feats = model.encode(x)
    logits = model.classify(feats)
    masks = model.segment(feats, x, torch.ones_like(x))
    (logits.square().mean() + masks.mean()).backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_the_calibration_leaves_fp32_numerics_bit_identical():
    """``auto`` calibrates with bf16 matmuls and convolutions (oneDNN); a run that then resolves
    to fp32 must compute exactly what it would have without the probe."""
    before = _fp32_gradients()
    threads = torch.get_num_threads()
    speed = prec.calibrate(size=128, channels=16, repeats=1)
    assert set(speed) == {"matmul", "conv"} and all(v > 0 for v in speed.values())
    assert torch.get_num_threads() == threads and not torch.is_autocast_enabled("cpu")
    after = _fp32_gradients()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_compute_settings_are_put_back_even_on_an_error():
    from multimix.engine.runtime import compute_settings

    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), compute_settings(threads + 1, CPU):
        assert torch.get_num_threads() == threads + 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == threads
    with pytest.raises(RuntimeError, match="boom"), prec.precision_context("bf16", CPU):
        raise RuntimeError("boom")
    assert not torch.is_autocast_enabled("cpu")
