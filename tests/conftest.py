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
def served_run(tmp_path_factory, phantom_dirs) -> Path:
    """A multi-class run trained 40 steps at 32 px on the segmentation phantoms (labels and
    masks), so its lung masks are not empty: the API, the service and the export use it."""
    from typer.testing import CliRunner

    from multimix.cli.app import app

    run = tmp_path_factory.mktemp("served") / "run"
    data = phantom_dirs["seg"]
    args = [
        "train", "--out", run, "--class-data", data, "--seg-data", data,
        "--image-size", "32", "--widths", "8,16,16,32,32", "--steps", "40",
        "--val-every", "20", "--batch-size", "8", "--lr", "0.01",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return run


def save_radiograph_dicom(path: Path, image, **attributes) -> Path:
    """A 16-bit DX DICOM of a [0, 1] image with the patient/study UIDs a PACS export has."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    raw = np.rint(np.asarray(image) * 4000).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage (presentation)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "P0001", "Phantom^One", "DX"
    ds.Rows, ds.Columns = raw.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    for name, value in attributes.items():
        setattr(ds, name, value)
    ds.PixelData = raw.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


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
