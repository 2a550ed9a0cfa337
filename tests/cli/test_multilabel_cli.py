from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from multimix.cli.app import app

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_multilabel_phantom_train_evaluate(tmp_path):
    data = tmp_path / "ml"
    result = invoke(
        "phantom", "--out", data, "--count", "48", "--size", "32", "--multilabel",
        "--label-noise", "0.2", "--seed", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    result = invoke(
        "train", "--out", run, "--task", "multilabel", "--aux", "segmentation,localization",
        "--class-data", data, "--seg-data", data, "--classes",
        "cardiomegaly,effusion,nodule,opacity", "--image-size", "32", "--widths", "8,16,16,32,32",
        "--steps", "6", "--val-every", "3", "--uncertain", "soft", "--ml-loss", "gce",
        "--pos-weight", "auto", "--label-smoothing", "0.1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    thresholds = json.loads((run / "thresholds.json").read_text())["thresholds"]
    assert set(thresholds) == {"cardiomegaly", "effusion", "nodule", "opacity"}
    out = tmp_path / "metrics.json"
    result = invoke("evaluate", run, "--data", data, "--out", out)
    assert result.exit_code == 0, result.output
    block = json.loads(out.read_text())["sources"]["ml"]
    assert "classification" not in block
    ml = block["multilabel"]
    assert set(ml["per_finding"]) == set(thresholds) and "mean_auc" in ml
    assert ml["per_finding"]["nodule"]["threshold"] == pytest.approx(thresholds["nodule"])
    assert {"lungs", "heart", "clavicles"} <= set(block["segmentation"])
    assert block["segmentation"]["heart"]["n"] == block["n_images"]
    loc = block["localization"]
    assert loc["cam"] == "localization_head" and loc["n_boxes"] > 0
    assert set(loc["box_iou_hit"]) == {"0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"}
    assert 0.0 <= loc["zone_accuracy"] <= 1.0


def test_multilabel_options_are_one_line_errors(tmp_path):
    data = tmp_path / "ml"
    invoke("phantom", "--out", data, "--count", "8", "--size", "32", "--multilabel")
    base = ["train", "--out", tmp_path / "r", "--task", "multilabel", "--class-data", data]
    cases = [
        (["--aux", "depth"], "--aux takes"),
        (["--aux", "segmentation"], "--aux segmentation needs --seg-data"),
        (["--uncertain", "maybe"], "--uncertain must be one of"),
        (["--classes", "effusion"], "is not one of --classes"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, [str(a) for a in base + extra])
        assert result.exit_code == 2, result.output
        assert message in result.output
