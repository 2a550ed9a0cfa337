"""predict --dicom-seg: a DICOM Segmentation that references its source, and a JSON sidecar."""

from __future__ import annotations

import csv
import json

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

import multimix.api as mm
from multimix.cli.app import app
from multimix.core.errors import DataError
from multimix.data.io import read_image, read_mask
from multimix.pipelines.dicom_out import segmentation_dataset, write_dicom_result
from tests.conftest import save_radiograph_dicom


@pytest.fixture(scope="module")
def source(phantom_dirs, tmp_path_factory):
    image = read_image(sorted((phantom_dirs["seg"] / "images").glob("*.png"))[2])
    folder = tmp_path_factory.mktemp("dicom_in")
    return save_radiograph_dicom(folder / "chest.dcm", image)


def test_predict_writes_a_seg_pydicom_reads_back(served_run, source, phantom_dirs, tmp_path):
    png = sorted((phantom_dirs["seg"] / "images").glob("*.png"))[3]
    out = tmp_path / "pred"
    result = CliRunner().invoke(
        app, ["predict", str(served_run), str(source), str(png), "--out", str(out), "--dicom-seg"]
    )
    assert result.exit_code == 0, result.output
    assert "1 input(s) are not DICOM" in result.output
    seg = pydicom.dcmread(out / "dicom" / "chest.seg.dcm")
    src = pydicom.dcmread(source)
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    ref = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == src.SOPClassUID
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.PatientID == src.PatientID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lungs"]
    row = next(r for r in csv.DictReader((out / "predictions.csv").open()) if "chest" in r["image"])
    written = read_mask(out / row["mask_path"])
    assert written.any()  # the trained run segments something: the comparison is not trivial
    assert np.array_equal(seg.pixel_array.astype(bool), written)
    sidecar = json.loads((out / "dicom" / "chest.json").read_text())
    assert sidecar["source"]["SOPInstanceUID"] == src.SOPInstanceUID
    assert sidecar["segmentation"]["SOPInstanceUID"] == seg.SOPInstanceUID
    assert sidecar["predicted"] == [row["predicted_class"]]
    assert sidecar["probabilities"]["pneumonia"] == pytest.approx(float(row["p_pneumonia"]))
    assert not (out / "dicom" / f"{png.stem}.seg.dcm").exists()


def test_several_structures_and_a_mask_of_any_shape(served_run, source, tmp_path):
    model = mm.load(served_run)
    ds = pydicom.dcmread(source)
    pred = model.predict(ds)
    rng = np.random.default_rng(0)
    pred.masks = {
        "lungs": rng.random(pred.shape) > 0.5,
        "heart": np.zeros(pred.shape, bool),  # an empty segment stays a frame
    }
    seg_path, _ = write_dicom_result(pred, ds, tmp_path / "x.seg.dcm", model)
    seg = pydicom.dcmread(seg_path)
    frames = seg.pixel_array.reshape(-1, *pred.shape).astype(bool)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lungs", "heart"]
    assert np.array_equal(frames[0], pred.masks["lungs"]) and not frames[1].any()


def test_a_source_a_seg_cannot_reference_is_one_line(served_run, source):
    model = mm.load(served_run)
    ds = pydicom.dcmread(source)
    pred = model.predict(ds)
    del ds.SOPInstanceUID
    with pytest.raises(DataError, match="lacks SOPInstanceUID"):
        segmentation_dataset(pred, ds, model)
