from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from multimix.cli.app import app
from tests.conftest import SHARED_DATA

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.slow
def test_train_evaluate_on_phantoms(tmp_path, phantom_dirs):
    run = tmp_path / "run"
    result = invoke(
        "train", "--out", run, "--method", "multimix",
        "--class-data", phantom_dirs["cls"], "--seg-data", phantom_dirs["seg"],
        "--labeled-class", "12", "--labeled-seg", "6", "--image-size", "32",
        "--widths", "8,16,16,32,32", "--steps", "12", "--val-every", "6", "--seed", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "metrics.json"
    result = invoke(
        "evaluate", run, "--data", phantom_dirs["cls"], "--data", phantom_dirs["seg"],
        "--data", phantom_dirs["ped"], "--out", out, "--report", tmp_path / "report",
        "--explain", "saliency,gradcam",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["sources"]
    assert set(metrics) == {"ph_cls", "ph_seg", "ph_ped"}
    assert metrics["ph_cls"]["part"] == "test" and metrics["ph_ped"]["part"] == "all"
    assert "segmentation" not in metrics["ph_cls"]
    cls = metrics["ph_cls"]["classification"]
    assert {"accuracy", "auc", "f1_macro", "per_class", "confusion"} <= set(cls)
    assert {"dice", "iou", "hd95"} <= set(metrics["ph_seg"]["segmentation"])
    assert (tmp_path / "report" / "report.html").exists()
    assert cls["ece"] is not None and sum(cls["calibration"]["count"]) == cls["n"]
    for name, block in metrics.items():
        assert set(block["explanations"]) == {"saliency", "gradcam"}, name
        for method in block["explanations"].values():
            assert method["deletion_auc"] is not None
            assert (method["lung_share"] is None) == (name == "ph_cls")  # no masks there
    figs = {p.name for p in (tmp_path / "report" / "figures").glob("*.png")}
    for prefix in ("roc_", "reliability_", "dice_", "deletion_"):
        assert any(f.startswith(prefix) for f in figs), prefix
    for suffix in ("_worst-segmentations.png", "_best-segmentations.png"):
        assert any(f.endswith(suffix) for f in figs), suffix
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h3>False positives</h3>" in page and "<h3>Explanations</h3>" in page
    split = json.loads((run / "split.json").read_text())["sources"]["ph_cls"]
    assert metrics["ph_cls"]["n_images"] == len(split["test"])


def test_user_errors_are_one_line(tmp_path, phantom_dirs):
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "r"), "--steps", "1"])
    assert result.exit_code == 2 and "error: give at least one" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "nope"), "--data", "x"])
    assert result.exit_code == 2 and "run folder not found" in result.output
    result = runner.invoke(
        app,
        ["train", "--out", str(tmp_path / "r2"), "--class-data", str(phantom_dirs["cls"]),
         "--classes", "normal,viral", "--steps", "1"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "label 'pneumonia' is not one of the classes normal,viral" in result.output
    assert "Traceback" not in result.output
    for widths in ("8,x", "8,0"):
        result = runner.invoke(
            app, ["train", "--out", str(tmp_path / "r3"), "--seg-data", str(phantom_dirs["seg"]),
                  "--widths", widths],
        )  # fmt: skip
        assert result.exit_code == 2 and "error: --widths" in result.output


def test_phantom_command(tmp_path):
    result = invoke("phantom", "--out", tmp_path / "p", "--count", "4", "--size", "64")
    assert result.exit_code == 0
    assert len(list((tmp_path / "p" / "images").glob("*.png"))) == 4


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "covid_ieee8023").is_dir(), reason="../shared/data absent")
def test_train_evaluate_on_shared_data(tmp_path):
    run = tmp_path / "run"
    kermany, covid = SHARED_DATA / "kermany_pneumonia", SHARED_DATA / "covid_ieee8023"
    result = invoke(
        "train", "--out", run, "--class-data", kermany, "--seg-data", covid,
        "--labeled-class", "20", "--labeled-seg", "5", "--image-size", "32",
        "--widths", "8,16,16,32,32", "--steps", "4", "--val-every", "4",
        "--label-map", "covid=pneumonia,ards=pneumonia",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "m.json"
    result = invoke("evaluate", run, "--data", kermany, "--data", covid, "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["sources"]
    assert metrics["kermany_pneumonia"]["part"] == "test"
    assert "classification" in metrics["covid_ieee8023"]
    assert "segmentation" in metrics["covid_ieee8023"]
    assert "segmentation" not in metrics["kermany_pneumonia"]


def test_evaluate_adapt_options_reach_the_metrics(tmp_path, joint_run, phantom_dirs):
    out = tmp_path / "adapted.json"
    result = invoke(
        "evaluate", joint_run, "--data", phantom_dirs["ped"], "--out", out, "--adapt",
        "--adapt-layers", "encoder", "--adapt-weight", "0.5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    block = json.loads(out.read_text())["sources"]["ph_ped"]["adapted"]
    assert block["scope"] == "encoder" and block["weight"] == 0.5
    assert block["labels_used"] is False
    assert "ph_ped: --adapt: batch-norm statistics of" in result.output
    assert "encoder layers re-estimated" in result.output and "mixed 0.5" in result.output
    result = runner.invoke(
        app, ["evaluate", str(joint_run), "--data", str(phantom_dirs["ped"]), "--out",
              str(out), "--adapt", "--adapt-weight", "2"],
    )  # fmt: skip
    assert result.exit_code == 2 and "--adapt-weight must lie in (0, 1]" in result.output
    assert "Traceback" not in result.output


def test_predict_adapt_says_which_layers_it_re_estimated(tmp_path, joint_run, phantom_dirs):
    """Also that the options override the defaults (which mix at 0.5)."""
    result = invoke(
        "predict", joint_run, phantom_dirs["ped"] / "images", "--out", tmp_path / "pred",
        "--adapt", "--adapt-layers", "encoder", "--adapt-weight", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "note: --adapt: batch-norm statistics of" in result.output
    assert "encoder layers re-estimated" in result.output and "mixed" not in result.output
