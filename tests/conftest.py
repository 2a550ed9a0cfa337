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


def _numerics_state() -> dict[str, object]:
    """The process-wide settings that change fp32 results (the thread count reorders
    reductions) or the precision ``auto`` picks; the golden figures assume them unchanged."""
    return {
        "threads": torch.get_num_threads(),
        "cpu autocast": torch.is_autocast_enabled("cpu"),
        "cpu autocast dtype": torch.get_autocast_dtype("cpu"),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "mkldnn enabled": torch.backends.mkldnn.enabled,
        "cudnn benchmark": torch.backends.cudnn.benchmark,
        "deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        **{k: os.environ.get(k) for k in ("MULTIMIX_PRECISION", "ONEDNN_DEFAULT_FPMATH_MODE")},
    }


_NUMERICS = _numerics_state()


@pytest.fixture(autouse=True)
def _numerics_unchanged():
    """Fail the test that leaves a numerics setting changed, where it happened (rather than a
    golden figure that moves several files later), and put the setting back."""
    yield
    after = _numerics_state()
    if after != _NUMERICS:
        changed = {k: (_NUMERICS[k], v) for k, v in after.items() if v != _NUMERICS[k]}
        torch.set_num_threads(_NUMERICS["threads"])
        torch.set_autocast_enabled("cpu", _NUMERICS["cpu autocast"])
        torch.set_autocast_dtype("cpu", _NUMERICS["cpu autocast dtype"])
        torch.set_float32_matmul_precision(_NUMERICS["float32 matmul precision"])
        torch.backends.mkldnn.enabled = _NUMERICS["mkldnn enabled"]
        torch.backends.cudnn.benchmark = _NUMERICS["cudnn benchmark"]
        torch.use_deterministic_algorithms(_NUMERICS["deterministic algorithms"])
        for key in ("MULTIMIX_PRECISION", "ONEDNN_DEFAULT_FPMATH_MODE"):
            if _NUMERICS[key] is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = _NUMERICS[key]
        pytest.fail(f"the test left process-wide numerics changed (before, after): {changed}")


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


@pytest.fixture(scope="session")
def joint_run(tmp_path_factory, phantom_dirs) -> Path:
    """A 32 px ``multimix`` run on the adult phantoms (classes and masks), 24 steps."""
    from multimix.config import TrainConfig
    from multimix.engine.trainer import train

    root = tmp_path_factory.mktemp("joint")
    cfg = TrainConfig(
        out=str(root / "run"), method="multimix", class_data=[str(phantom_dirs["cls"])],
        seg_data=[str(phantom_dirs["seg"])], image_size=32, widths=[8, 16, 16, 32, 32],
        batch_size=8, steps=24, val_every=12, seed=0,
    )  # fmt: skip
    return train(cfg)
