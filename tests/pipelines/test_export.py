"""multimix export --format onnx: saliency in the graph, onnxruntime equal to torch."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import multimix.api as mm
from multimix.cli.app import app
from multimix.core.errors import ConfigError
from multimix.models.net import ModelConfig, MultiMixNet
from multimix.pipelines.export import TOLERANCE, InferenceGraph, check_batch, export_onnx, parity

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(served_run, tmp_path_factory) -> Path:
    """The CLI's export into the run folder (its default place), output kept for the tests."""
    result = runner.invoke(app, ["export", str(served_run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return served_run / "model.onnx", result.output


def test_export_prints_the_parity_and_says_where_saliency_is(exported):
    path, output = exported
    assert path.is_file()
    assert "saliency bridge: in the graph" in output
    for name in ("logits", "mask_probs", "saliency"):
        assert f"max abs diff onnxruntime vs torch, {name}:" in output


def test_onnxruntime_matches_torch_on_new_batches(exported, served_run):
    import onnxruntime as ort

    path, _ = exported
    _, model = mm.load(served_run).cfg, mm.load(served_run).net
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, seed in ((1, 5), (3, 6)):  # the batch axis is dynamic
        diffs = parity(model, session, check_batch(32, n, seed))
        assert set(diffs) == {"logits", "mask_probs", "saliency"}
        for name, diff in diffs.items():
            assert diff <= TOLERANCE[name], (name, diff)


def test_predict_backend_onnx_matches_torch(exported, served_run, phantom_dirs, tmp_path):
    images = sorted((phantom_dirs["seg"] / "images").glob("*.png"))[:3]
    torch_model = mm.load(served_run)
    onnx_model = mm.load(served_run, backend="onnx")
    for image in images:
        a, b = torch_model.predict(image), onnx_model.predict(image)
        assert a.predicted == b.predicted
        for c in a.classes:
            assert a.probabilities[c] == pytest.approx(b.probabilities[c], abs=1e-4)
        agree = (a.masks["lungs"] == b.masks["lungs"]).mean()
        assert agree >= 0.999  # a pixel at 0.5 +- 1e-6 may fall either way
    out = tmp_path / "pred"
    result = runner.invoke(
        app, ["predict", str(served_run), str(images[0]), "--out", str(out), "--backend", "onnx"]
    )
    assert result.exit_code == 0, result.output
    row = next(csv.DictReader((out / "predictions.csv").open()))
    ref = torch_model.predict(images[0])
    assert float(row["p_pneumonia"]) == pytest.approx(ref.probabilities["pneumonia"], abs=1e-4)
    with pytest.raises(ConfigError, match="--backend torch"):
        onnx_model.predict(images[0], explain="gradcam")


def test_multilabel_export_keeps_the_localization_maps(multilabel_run, tmp_path):
    report = export_onnx(multilabel_run["run"], tmp_path / "ml.onnx")
    assert report.outputs == ["logits", "mask_logits", "activation_maps"]  # no bridge here
    assert not report.saliency_in_graph
    assert report.ok, report.max_abs_diff
    model = mm.load(multilabel_run["run"], backend="onnx", onnx_path=tmp_path / "ml.onnx")
    image = sorted((multilabel_run["data"] / "images").glob("*.png"))[0]
    ref = mm.load(multilabel_run["run"]).predict(image)
    got = model.predict(image)
    assert got.predicted == ref.predicted and got.extra == ref.extra


def test_what_onnx_cannot_express_is_said_plainly(tmp_path, served_run, phantom_dirs):
    resnet = MultiMixNet(ModelConfig(backbone="resnet", widths=(8, 16, 16, 32, 32)))
    with pytest.raises(ConfigError, match="not traceable"):
        InferenceGraph(resnet.eval())
    plain = MultiMixNet(ModelConfig(backbone="resnet", widths=(8, 16, 16, 32, 32), bridge=False))
    assert InferenceGraph(plain.eval()).output_names == ["logits", "mask_logits"]
    missing = tmp_path / "none.onnx"
    with pytest.raises(ConfigError, match="no ONNX file"):
        mm.load(served_run, backend="onnx", onnx_path=missing)
    (tmp_path / "junk.onnx").write_bytes(np.zeros(64, np.uint8).tobytes())
    result = runner.invoke(
        app, ["predict", str(served_run), str(phantom_dirs["seg"]), "--out", str(tmp_path / "o"),
              "--backend", "onnx", "--onnx", str(tmp_path / "junk.onnx")],
    )  # fmt: skip
    assert result.exit_code == 2 and "not a readable ONNX model" in result.output
