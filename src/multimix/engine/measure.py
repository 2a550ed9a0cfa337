"""Measuring tools for ``multimix bench``: timed loops, FLOP counts, a matmul peak, a profile."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from multimix.engine.precision import cpu_capability, cpu_flags, cpu_model
from multimix.models.fusion import onednn_runs_bf16


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for queued GPU work, so a timer stops when the work is done, not when it is queued."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@dataclass
class Timing:
    """Seconds per call: wall clock (what the figures use) and this process's CPU time.

    CPU time per call hardly changes when other jobs share the machine, wall time does: a wall
    time well above ``cpu_s / threads`` means the run was disturbed (or threads sat idle).
    """

    wall: list[float]
    cpu: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    def summary(self) -> dict[str, float]:
        return {
            "median_s": self.median,
            "min_s": min(self.wall),
            "mean_s": statistics.fmean(self.wall),
            "cpu_s": statistics.median(self.cpu),
            "n": len(self.wall),
        }


def time_calls(
    fn: Callable[[], object],
    sync: Callable[[], None],
    warmup: int,
    steps: int | None,
    seconds: float | None,
) -> Timing:
    """Time ``fn`` after ``warmup`` untimed calls: ``steps`` calls, or until ``seconds`` passed
    (both given: whichever takes longer; neither: 5 calls)."""
    return time_rounds({"": fn}, sync, warmup, steps, seconds)[""]


def time_rounds(
    fns: dict[str, Callable[[], object]],
    sync: Callable[[], None],
    warmup: int,
    steps: int | None,
    seconds: float | None,
) -> dict[str, Timing]:
    """Time several calls in rounds, each called once per round, as ``time_calls`` times one.

    A shared machine speeds up and slows down over a minute; timing the calls alternately lets
    such drifts touch all of them alike, so their ratios hold even when the absolute times move.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    wanted = steps if steps is not None else (1 if seconds else 5)
    timings = {name: Timing([], []) for name in fns}
    begin = time.perf_counter()
    rounds = 0
    while rounds < wanted or (seconds and time.perf_counter() - begin < seconds):
        for name, fn in fns.items():
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            timings[name].wall.append(time.perf_counter() - start)
            timings[name].cpu.append(time.process_time() - cpu)
        rounds += 1
    return timings


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call as torch counts them: matmuls and convolutions, forward and backward
    (elementwise work such as batch norm is not counted; it is what the peak share leaves out)."""
    with FlopCounterMode(display=False, custom_mapping=_FUSED_FLOPS) as counter:
        fn()
    return counter.get_total_flops()


def _fused_conv_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's conv + post-op (``models.fusion.ConvReLU``) counts as its convolution."""
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape), transposed=False)


_FUSED_FLOPS = (
    {torch.ops.mkldnn._convolution_pointwise: _fused_conv_flops}
    if hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    else {}
)


def matmul_peaks(
    device: torch.device, size: int, repeats: int, dtype: torch.dtype | None = None
) -> dict[str, float]:
    """Best GFLOP/s of a large square matmul per library torch can run it with here.

    On GPU: bfloat16 ``torch.mm``. On CPU, float32 through the BLAS (MKL) and through oneDNN,
    the library the network's convolutions run on. On this project's AVX-512 AMD machine MKL
    reached 190-223 GFLOP/s and oneDNN 420-479, so a BLAS-only "peak" put the convolutions
    above 100% of it. The peak used for shares is the largest of these.

    ``dtype`` (default: bfloat16 on GPU, float32 on CPU) measures another precision's peak the
    same way, e.g. bfloat16 on CPU for ``--precision bf16``.
    """
    g = torch.Generator().manual_seed(0)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = {torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype, str(dtype))
    a = torch.randn(size, size, generator=g).to(device, dtype)
    b = torch.randn(size, size, generator=g).to(device, dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    sync = synchronizer(device)

    def best(fn: Callable[[], object]) -> float:
        return 2 * size**3 / min(time_calls(fn, sync, 2, repeats, None).wall) / 1e9

    if device.type == "cuda":
        return {f"torch.mm ({name})": best(lambda: torch.mm(a, b, out=out))}
    peaks = {"blas (torch.mm)": best(lambda: torch.mm(a, b, out=out))}
    linear = getattr(torch._C._nn, "mkldnn_linear", None)
    if torch.backends.mkldnn.is_available() and linear is not None:
        if dtype == torch.bfloat16 and not onednn_runs_bf16():
            return peaks
        am, bm = a.to_mkldnn(), b.to_mkldnn()
        peaks["onednn (mkldnn_linear)"] = best(lambda: linear(am, bm))
    return peaks


def profile_operators(
    fn: Callable[[], object], calls: int, device: torch.device, top: int = 15
) -> list[dict[str, object]]:
    """The operators with the most self time over ``calls`` calls of ``fn``, per call."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        synchronizer(device)()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(getattr(e, key) for e in events) or 1.0
    ranked = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:top]
    return [
        {
            "op": e.key,
            "self_ms": getattr(e, key) / 1e3 / calls,
            "share": getattr(e, key) / total,
            "calls": e.count / calls,
        }
        for e in ranked
    ]


def environment(device: torch.device) -> dict[str, object]:
    """What the figures depend on, so a reader can tell whether two runs are comparable."""
    env: dict[str, object] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_name(),
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "precision": "bfloat16 autocast" if device.type == "cuda" else "float32",
        "cpu_flags": cpu_flags(),
        "cpu_capability": cpu_capability(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _cpu_name() -> str:
    return cpu_model()
