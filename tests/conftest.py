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
