"""Shared fixtures: small phantom sources written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from multimix.data.phantom import write_source

os.environ.setdefault("MULTIMIX_NO_REEXEC", "1")
torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def phantom_dirs(tmp_path_factory) -> dict[str, Path]:
    """A classification source (labels, no masks) and a segmentation source (masks)."""
    root = tmp_path_factory.mktemp("phantoms")
    return {
        "cls": write_source(root / "ph_cls", count=80, seed=11, size=64, mask_fraction=0.0),
        "seg": write_source(root / "ph_seg", count=48, seed=12, size=64, mask_fraction=1.0),
        "ped": write_source(
            root / "ph_ped", count=16, seed=13, size=64, mask_fraction=1.0, style="pediatric"
        ),
    }
