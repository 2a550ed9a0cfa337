"""The benchmark scripts are run as ``python benchmarks/NAME.py``, not installed: load them
from their folder (which they expect on the path, for ``run_results``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def benchmark_module():
    def load(name: str):
        if str(BENCHMARKS) not in sys.path:
            sys.path.insert(0, str(BENCHMARKS))
        return importlib.import_module(name)

    return load
