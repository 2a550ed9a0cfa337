"""multimix.api: one model, any input type, a typed result that predict and serve share."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

import multimix.api as mm
from multimix.core.errors import CheckpointError, ConfigError, DataError
from multimix.data.io import read_image, read_mask
from multimix.pipelines.predict import predict_paths
from tests.conftest import FINDINGS, save_radiograph_dicom


@pytest.fixture(scope="module")
def model(served_run) -> mm.Model:
    return mm.load(served_run)


@pytest.fixture(scope="module")
def radiograph(phantom_dirs) -> Path:
    return sorted((phantom_dirs["seg"] / "images").glob("*.png"))[0]


def test_every_input_type_gives_the_same_prediction(model, radiograph, tmp_path):
    gray = read_image(radiograph)
    u8 = np.rint(gray * 255).astype(np.uint8)
    dicom = save_radiograph_dicom(tmp_path / "scan.dcm", gray)
    inputs = {
        "path": radiograph,
        "str": str(radiograph),
        "bytes": radiograph.read_bytes(),
        "pil": Image.open(radiograph),
        "uint8": u8,
        "float": gray,
        "rgb": np.repeat(u8[..., None], 3, axis=2),
    }
    ref = model.predict(radiograph)
    assert set(ref.probabilities) == {"normal", "pneumonia"}
    assert ref.predicted == [max(ref.probabilities, key=ref.probabilities.get)]
    for kind, x in inputs.items():
        got = model.predict(x)
        assert got.shape == gray.shape, kind
        for c in ref.classes:
            assert got.probabilities[c] == pytest.approx(ref.probabilities[c], abs=1e-5), kind
        assert np.array_equal(got.masks["lungs"], ref.masks["lungs"]), kind
    # DICOM (the 16-bit pixels are stretched, so not bit-equal to the PNG): path and Dataset
    by_path, by_ds = model.predict(dicom), model.predict(pydicom.dcmread(dicom))
    assert by_ds.name == str(pydicom.dcmread(dicom).SOPInstanceUID)
    assert by_path.probabilities == pytest.approx(by_ds.probabilities, abs=1e-6)
    assert np.array_equal(by_path.masks["lungs"], by_ds.masks["lungs"])


def test_predict_images_reads_uint8_arrays_as_predict_does(model, radiograph):
    """A batch of uint8 arrays is scaled by 255, not clipped to white; a float array outside
    [0, 1] is a one-line error naming the image."""
    gray = read_image(radiograph)
    u8 = np.rint(gray * 255).astype(np.uint8)
    ref = model.predict(radiograph)
    (got,) = model.predict_images([u8], names=["scan-7"])
    assert got.probabilities == pytest.approx(ref.probabilities, abs=1e-5)
    assert np.array_equal(got.masks["lungs"], ref.masks["lungs"])
    assert ref.masks["lungs"].any()
    with pytest.raises(DataError, match=r"scan-7.*must lie in \[0, 1\]") as err:
        model.predict_images([u8.astype(np.float32)], names=["scan-7"])
    assert "\n" not in str(err.value)


def test_result_holds_masks_area_maps_and_json(model, radiograph):
    gray = read_image(radiograph)
    wide = np.asarray(Image.fromarray(np.rint(gray * 255).astype(np.uint8)).resize((90, 50)))
    pred = model.predict(wide, explain="saliency,gradcam,ig", name="wide")
    assert pred.masks["lungs"].shape == (50, 90) and pred.masks["lungs"].dtype == bool
    assert 0.05 < pred.lung_area_fraction < 0.95  # the trained run segments the lungs
    assert pred.lung_area_fraction == pytest.approx(pred.masks["lungs"].mean())
    assert set(pred.explanations) == {"saliency", "gradcam", "ig"}
    for maps in pred.explanations.values():
        assert list(maps) == pred.predicted  # the predicted class is explained
        heat = next(iter(maps.values()))
        assert heat.shape == (50, 90) and heat.min() >= 0.0 and heat.max() <= 1.0
    body = json.loads(pred.to_json())
    assert body["name"] == "wide" and body["height"] == 50 and body["width"] == 90
    assert body["probabilities"].keys() == {"normal", "pneumonia"}
    assert body["explained"]["gradcam"] == pred.predicted
    assert body["thresholds"] is None and body["task"] == "multiclass"


def test_predict_cli_writes_what_the_api_returns(model, served_run, radiograph, tmp_path):
    out = tmp_path / "pred"
    summary = predict_paths(served_run, [radiograph], out)
    assert summary.n_ok == 1
    row = next(csv.DictReader((out / "predictions.csv").open()))
    pred = model.predict(radiograph)
    assert row["predicted_class"] == pred.predicted[0]
    assert float(row["p_pneumonia"]) == pytest.approx(pred.probabilities["pneumonia"], abs=1e-6)
    assert np.array_equal(read_mask(out / row["mask_path"]), pred.masks["lungs"])


def test_last_checkpoint_and_bad_arguments(served_run, model, tmp_path):
    last = mm.load(served_run, checkpoint="last")
    assert last.checkpoint == "last" and last.info()["checkpoint"] == "last"
    with pytest.raises(ConfigError, match="checkpoint"):
        mm.load(served_run, checkpoint="middle")
    with pytest.raises(ConfigError, match="backend"):
        mm.load(served_run, backend="tensorrt")
    with pytest.raises(CheckpointError):
        mm.load(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="unknown explanation method 'lime'"):
        model.predict(np.zeros((8, 8), np.uint8), explain="lime")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (b"", "empty file"),
        (b"not an image at all" * 20, "not a PNG, JPEG or DICOM"),
        (np.zeros((4, 4, 2)), r"\(H, W\) or \(H, W, 3\)"),
        (np.full((4, 4), 2.0), r"must lie in \[0, 1\]"),
        (np.array([[np.nan]]), "NaN"),
        (12, "give a path, bytes"),
    ],
)
def test_bad_inputs_are_one_line_data_errors(model, x, message):
    with pytest.raises(DataError, match=message) as err:
        model.predict(x)
    assert "\n" not in str(err.value)


def test_truncated_and_pixel_less_uploads(model, radiograph, tmp_path):
    with pytest.raises(DataError, match="truncated"):
        model.predict(radiograph.read_bytes()[:200], name="cut.png")
    dicom = save_radiograph_dicom(tmp_path / "s.dcm", np.zeros((8, 8)))
    ds = pydicom.dcmread(dicom)
    del ds.PixelData
    with pytest.raises(DataError, match="no pixel data"):
        model.predict(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(DataError, match="no pixel data"):
        model.predict(buf.getvalue(), name="nopixels.dcm")


def test_multilabel_run_names_findings_and_thresholds(multilabel_run):
    model = mm.load(multilabel_run["run"])
    image = sorted((multilabel_run["data"] / "images").glob("*.png"))[0]
    pred = model.predict(image, explain="saliency")
    assert list(pred.probabilities) == list(FINDINGS)
    assert set(pred.thresholds) == set(FINDINGS)
    called = [f for f in FINDINGS if pred.probabilities[f] >= pred.thresholds[f]]
    assert pred.predicted == called
    assert list(pred.masks) == model.structures and "lungs" in pred.masks
    assert "zones" in pred.extra  # the localization head's zones, a task column
    explained = list(pred.explanations["saliency"])
    assert explained == (called or [max(pred.probabilities, key=pred.probabilities.get)])
    info = model.info()
    assert info["task"] == "multilabel" and info["thresholds"] == pred.thresholds


def test_predict_flips_the_masks_as_evaluate_does_where_the_plan_says_so(served_run, radiograph):
    import torch

    from multimix.data.io import resize_image
    from multimix.models.inference import run_model
    from multimix.models.postprocess import apply_plan

    flipped = mm.load(served_run)
    flipped.plan = {**(flipped.plan or {}), "flip_average": True}
    size = flipped.image_size
    gray = resize_image(read_image(radiograph), size)  # the run's size: no resampling after
    gray[:, : size // 3] = 0.0  # one side blanked: the image and its mirror disagree
    got = flipped.predict(gray).masks
    u8 = torch.from_numpy(np.rint(gray * 255).astype(np.uint8))[None, None]
    probs = run_model(flipped.net, u8, flipped.device, lambda z: z.float(), flip_masks=True).masks
    probs = apply_plan(probs.float(), flipped.plan, flipped.structures)
    unflipped = mm.load(served_run)
    unflipped.plan = {**(unflipped.plan or {}), "flip_average": False}
    plain = unflipped.predict(gray).masks
    for k, name in enumerate(flipped.structures):
        want = (probs[0, k] >= 0.5).numpy()
        assert (got[name] != want).mean() < 0.005, name
    assert any((plain[s] != got[s]).any() for s in flipped.structures)  # flipping did change it


def test_prepare_adapts_on_the_images_as_evaluate_reads_them(served_run, phantom_dirs):
    """``predict --adapt`` re-estimates the batch norms on the same uint8 levels the bank
    holds (one division by 255): the statistics are those ``evaluate --adapt`` gathers."""
    import torch

    from multimix.data.io import stored_image
    from multimix.models.adapt import adapt_batch_norm

    paths = sorted((phantom_dirs["ped"] / "images").glob("*.png"))[:8]
    images = [read_image(p) for p in paths]
    model = mm.load(served_run)
    notes = model.prepare(images, adapt=True)
    assert any(n.startswith("--adapt: batch-norm statistics of") for n in notes)
    u8 = torch.stack([torch.from_numpy(stored_image(i, model.image_size)) for i in images])
    expected, _ = adapt_batch_norm(mm.load(served_run).net, u8[:, None], model.device)
    got_norms = [m for m in model.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    want_norms = [m for m in expected.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert got_norms
    for got, want in zip(got_norms, want_norms, strict=True):
        assert torch.allclose(got.running_mean, want.running_mean, atol=1e-6)
        assert torch.allclose(got.running_var, want.running_var, atol=1e-6)
