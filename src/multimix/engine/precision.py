"""Which arithmetic the network runs in: ``--precision auto|fp32|bf16``.

``bf16`` trains under ``torch.autocast(..., dtype=torch.bfloat16)``: convolutions and matmuls
take bf16 inputs, everything else stays as autocast leaves it. Inference runs a bf16 copy of the
network (``models.fusion.inference_network``: batch norm folded, conv + ReLU fused, bf16
weights and activations from layer to layer, so no cast passes). On purpose, fp32 stays:

- the master weights and the optimizer state (autocast never changes a parameter's dtype, and
  the inference copy is a copy, so checkpoints are fp32 and load in either precision);
- the losses: ``Trainer._train_step`` takes the loss as the method returns it; autocast runs
  cross-entropy, BCE-with-logits and the softmax/sigmoid they need in fp32 on CPU and GPU
  (torch's fp32 list), and ``backward`` runs outside the context;
- the per-image standardisation of the input (``MultiMixNet.normalize``: a bf16 mean over 65k
  pixels is too coarse), class and mask probabilities (``.float()`` before softmax/sigmoid in
  ``predict``) and every metric, which are computed from them;
- the saliency's input-normalisation backward and its per-image max scaling. Its walk back
  through the encoder runs in the features' dtype: in bf16 it agrees with the fp32 walk of the
  same pass (correlation > 0.99, tests/models/test_fusion.py);
- validation during training (``engine.evaluate`` predicts in fp32), so the best checkpoint is
  chosen on the same numbers as before.

``auto`` picks bf16 where the hardware runs it faster (``detect_bf16``) and fp32 elsewhere.
The environment variable ``MULTIMIX_PRECISION`` (fp32 or bf16) decides ``auto`` instead: the
test suite sets it to fp32 so recorded figures stay bit-identical on any machine.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

from multimix.core.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
ENV = "MULTIMIX_PRECISION"
# /proc/cpuinfo flags that tell whether a CPU has bf16 arithmetic (first two) or related units.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_FLAGS = (
    "avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni",
    "amx_bf16", "amx_tile", "amx_int8", "amx_fp16",
)  # fmt: skip
# bf16 counts as supported on a CPU when its matmul and its 3x3 convolution both run at least
# this much faster than fp32 (below it the casts autocast adds eat the gain).
MIN_SPEEDUP = 1.2
CACHE_VERSION = 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The flags of ``REPORTED_FLAGS`` this CPU has (``/proc/cpuinfo``; empty where unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in REPORTED_FLAGS if f in have]
    except OSError:
        pass
    return []


def cpu_capability() -> str:
    """What torch dispatches its vectorised kernels to here (e.g. AVX512)."""
    get = getattr(torch.backends.cpu, "get_cpu_capability", None)
    return get() if get is not None else "unknown"


def calibrate(size: int = 768, channels: int = 64, repeats: int = 4) -> dict[str, float]:
    """bf16 over fp32 speed of a square matmul and a channels_last 3x3 convolution, best of
    ``repeats`` (fp32: the faster of the BLAS and oneDNN matmuls). Takes about a second."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    x = torch.randn(8, channels, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, generator=g).contiguous(
        memory_format=torch.channels_last
    )

    def best(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.no_grad():
        mm32 = best(lambda: torch.mm(a, b))
        linear = getattr(torch._C._nn, "mkldnn_linear", None)
        if torch.backends.mkldnn.is_available() and linear is not None:
            am, bm = a.to_mkldnn(), b.to_mkldnn()
            mm32 = min(mm32, best(lambda: linear(am, bm)))
        a16, b16 = a.bfloat16(), b.bfloat16()
        mm16 = best(lambda: torch.mm(a16, b16))
        conv32 = best(lambda: torch.conv2d(x, w, padding=1))
        x16, w16 = x.bfloat16(), w.bfloat16()
        conv16 = best(lambda: torch.conv2d(x16, w16, padding=1))
    return {"matmul": mm32 / mm16, "conv": conv32 / conv16}


def cache_path() -> Path:
    root = os.environ.get("MULTIMIX_CACHE_DIR") or Path.home() / ".cache" / "multimix"
    return Path(root) / "precision.json"


def _cache_key() -> str:
    return f"v{CACHE_VERSION} | {cpu_model()} | torch {torch.__version__} | {cpu_capability()}"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, key: str, entry: dict) -> None:
    try:
        from multimix.core.atomic import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(_read_cache(path) | {key: entry}, indent=2))
    except OSError:
        pass  # a read-only home only costs the calibration again next time


def detect_bf16(
    device: torch.device,
    cache: Path | bool | None = True,
    probe: Callable[[], dict[str, float]] = calibrate,
    flags: Callable[[], list[str]] = cpu_flags,
) -> tuple[bool, str]:
    """Whether bf16 runs faster than fp32 on ``device``, and why (one line, for the log).

    GPU: what torch reports (``torch.cuda.is_bf16_supported``). CPU: a bf16 flag in
    ``/proc/cpuinfo`` (``avx512_bf16`` or ``amx_bf16``: without them torch emulates bf16,
    slower than fp32) and then ``probe`` (the calibration), whose matmul and convolution must
    both be ``MIN_SPEEDUP`` times faster in bf16. The CPU verdict is cached per machine in
    ``cache_path()`` (keyed by CPU model and torch version); ``cache=False`` bypasses it, a path
    uses that file. Tests pass ``probe`` and ``flags`` to simulate a machine.
    """
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, f"{torch.cuda.get_device_name(device)} supports bf16"
        return False, "this GPU has no bf16 support"
    if device.type != "cpu":
        return False, f"bf16 is not probed on {device.type}"
    have = flags()
    units = [f for f in BF16_FLAGS if f in have]
    if not units:
        return False, "the CPU has no bf16 units (no avx512_bf16 or amx_bf16 flag)"
    path = cache_path() if cache is True else (Path(cache) if cache else None)
    key = _cache_key()
    entry = _read_cache(path).get(key) if path is not None else None
    if not isinstance(entry, dict) or "speedup" not in entry:
        entry = {"speedup": probe(), "flags": have}
        if path is not None:
            _write_cache(path, key, entry)
    speed = entry["speedup"]
    ok = min(speed.values()) >= MIN_SPEEDUP
    figures = ", ".join(f"{k} {v:.2f}x" for k, v in speed.items())
    verdict = "faster" if ok else f"not {MIN_SPEEDUP}x faster"
    return ok, f"{'+'.join(units)}; bf16 over fp32: {figures} ({verdict})"


def choose_precision(
    name: str, device: torch.device, detect: Callable[..., tuple[bool, str]] | None = None
) -> tuple[str, str]:
    """The precision ``name`` (auto, fp32 or bf16) means on ``device``, and why."""
    if name not in PRECISIONS:
        raise ConfigError(f"unknown --precision {name!r}; use auto, fp32 or bf16")
    if name != "auto":
        if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("--precision bf16 was asked for, but this GPU has no bf16 support")
        return name, "asked for"
    pinned = os.environ.get(ENV, "").strip()
    if pinned and pinned != "auto":
        if pinned not in ("fp32", "bf16"):
            raise ConfigError(f"unknown {ENV}={pinned!r}; use auto, fp32 or bf16")
        return pinned, f"auto, pinned by {ENV}"
    supported, reason = (detect or detect_bf16)(device)
    return ("bf16" if supported else "fp32"), f"auto: {reason}"


def resolve_precision(name: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``: what ``name`` (auto, fp32 or bf16) means on ``device``."""
    return choose_precision(name, device)[0]


def precision_dtype(precision: str) -> torch.dtype:
    """The dtype an inference copy runs in for a resolved precision (fp32 or bf16)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def precision_context(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 autocast for ``"bf16"``, nothing for ``"fp32"`` (resolve ``auto`` first)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return nullcontext()
    raise ConfigError(f"unknown precision {precision!r}; resolve it to fp32 or bf16 first")


def run_precision(run: Path, requested: str, device: torch.device, resume: bool, world) -> str:
    """The training run's precision: resolved once (a resumed run keeps the one it started
    with), agreed by every rank (bf16 only where all chose it), logged and saved in
    ``RUN/precision.json``."""
    from multimix.core.atomic import atomic_write_text
    from multimix.core.progress import console
    from multimix.engine import distributed

    path = Path(run) / "precision.json"
    saved = _read_cache(path) if resume else {}
    if saved.get("precision") in ("fp32", "bf16"):
        precision, reason = saved["precision"], f"kept from {path.name}"
    else:
        precision, reason = choose_precision(requested, device)
    votes = distributed.mean({"bf16": float(precision == "bf16")}, world, device)
    if precision == "bf16" and votes["bf16"] < 1.0:
        precision, reason = "fp32", "not every rank supports bf16"
    if world.main:
        console.print(f"precision {precision} ({reason})")
        record = {"requested": requested, "precision": precision, "reason": reason}
        atomic_write_text(path, json.dumps(record | {"device": str(device)}, indent=2))
    return precision
