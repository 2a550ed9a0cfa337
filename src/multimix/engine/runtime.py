"""Where and how fast the maths runs: device choice, threads, seeds."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import torch

from multimix.core.errors import ConfigError

# glibc returns large freed blocks to the OS by default, so every training step pays for fresh,
# zeroed pages; raising these thresholds keeps them in the heap (1.3-2x faster steps on CPU).
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but no CUDA GPU is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown --device {name!r}; use auto, cpu or cuda") from None


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


@contextmanager
def compute_settings(threads: int | None, device: torch.device) -> Iterator[None]:
    """The process-wide settings a training run or a benchmark wants (``set_threads``; on a GPU
    ``cudnn.benchmark``, for fixed shapes), put back as they were on the way out, error or not.

    Why: ``train`` and ``bench`` also run inside other processes (the test suite, a notebook).
    The thread count changes the order of floating-point reductions, so a count left behind
    changes the fp32 figures of every later computation in that process.
    """
    threads_before, benchmark_before = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        set_threads(threads)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.set_num_threads(threads_before)
        torch.backends.cudnn.benchmark = benchmark_before


def autocast(device: torch.device, precision: str = "fp32") -> AbstractContextManager:
    """The context a training or inference step runs in: bf16 autocast for ``precision="bf16"``,
    nothing for ``"fp32"`` (see ``engine.precision``; resolve ``auto`` there first)."""
    from multimix.engine.precision import precision_context

    return precision_context(precision, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
