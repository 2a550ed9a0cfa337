"""``multimix finalize``: an older run gets this version's after-training files again."""

from __future__ import annotations

import json
import shutil

import torch
from typer.testing import CliRunner

from multimix.cli.app import app
from multimix.models.shift import MATRIX_FILE, SHIFT_FILE, read_reference, shift_score

runner = CliRunner()


def test_finalize_rewrites_the_plan_and_the_shift_reference_as_training_did(tmp_path, joint_run):
    run = tmp_path / "run"
    shutil.copytree(joint_run, run)
    plan_before = json.loads((run / "postprocess.json").read_text())
    (run / "postprocess.json").unlink()
    (run / MATRIX_FILE).unlink()
    (run / SHIFT_FILE).write_text('{"mean": [0.0], "std": [1.0], "val_p95": 1.0}')  # older kind
    assert read_reference(run) is None
    weights = (run / "checkpoints" / "best.safetensors").read_bytes()

    result = runner.invoke(app, ["finalize", str(run)])
    assert result.exit_code == 0, result.output
    assert "shift reference:" in result.output
    assert json.loads((run / "postprocess.json").read_text()) == plan_before  # same decisions
    again, original = read_reference(run), read_reference(joint_run)
    probe = torch.randn(20, len(original["sources"][next(iter(original["sources"]))]["mean"]))
    assert shift_score(probe, again) == shift_score(probe, original)
    assert (run / "checkpoints" / "best.safetensors").read_bytes() == weights


def test_finalize_names_a_data_folder_that_is_gone(tmp_path, joint_run):
    run = tmp_path / "run"
    shutil.copytree(joint_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["seg_data"] = [str(tmp_path / "moved")]
    (run / "config.json").write_text(json.dumps(cfg))
    result = runner.invoke(app, ["finalize", str(run)])
    assert result.exit_code == 2
    assert "moved" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
