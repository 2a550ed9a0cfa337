"""Shared fixtures: small phantom sources written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from multimix.data.phantom import write_source

os.environ.setdefault("MULTIMIX_NO_REEXEC", "1")
os.environ["MULTIMIX_PRECISION"] = "fp32"  # --precision auto: fp32, the recorded numerics
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


FINDINGS = ("cardiomegaly", "effusion", "nodule", "opacity")


@pytest.fixture(scope="session")
def multilabel_run(tmp_path_factory) -> dict[str, Path]:
    """A 32 px multi-label phantom source (findings, boxes, lung/heart/clavicle masks) and a
    run trained on it for 4 steps with segmentation and localization (supervised only)."""
    from typer.testing import CliRunner

    from multimix.cli.app import app

    root = tmp_path_factory.mktemp("multilabel")
    data = write_source(root / "ml", count=48, seed=3, size=32, multilabel=True, label_noise=0.2)
    run = root / "run"
    args = [
        "train", "--out", run, "--task", "multilabel", "--method", "multilabel",
        "--aux", "segmentation,localization", "--class-data", data, "--seg-data", data,
        "--classes", ",".join(FINDINGS), "--image-size", "32", "--widths", "8,16,16,32,32",
        "--steps", "4", "--val-every", "2",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {"data": data, "run": run}
