"""Every registered method x task x backbone trains a step, resumes exactly, evaluates, predicts.

A part that registers itself must work with the engine as it is: this is the test a new
method, task or backbone gets for free.
"""

from __future__ import annotations

import json

import pytest

from multimix.config import TrainConfig
from multimix.engine.trainer import train
from multimix.methods.base import METHODS
from multimix.models.backbones import available_backbones
from multimix.pipelines.evaluate import evaluate_run
from tests.resume_helpers import assert_same_weights, stop_then_resume

FINDINGS = ["cardiomegaly", "effusion", "nodule", "opacity"]
SMALL = dict(image_size=32, widths=[8, 8, 16, 16, 16], batch_size=3, val_every=1, seed=0, steps=2)
COMBOS = [
    (key.split("/")[0], key.split("/")[1], backbone)
    for key in METHODS
    for backbone in available_backbones()
]


def _cfg(task: str, method: str, backbone: str, out, phantom_dirs, multilabel_run) -> TrainConfig:
    if task == "multilabel":
        data = str(multilabel_run["data"])
        extra = dict(class_data=[data], seg_data=[data], classes=FINDINGS,
                     task_options={"aux": ["segmentation", "localization"]})  # fmt: skip
    else:
        extra = dict(class_data=[str(phantom_dirs["cls"])], seg_data=[str(phantom_dirs["seg"])],
                     labeled_class=8, labeled_seg=4)  # fmt: skip
    return TrainConfig(out=str(out), task=task, method=method, backbone=backbone, **SMALL, **extra)


@pytest.mark.parametrize(("task", "method", "backbone"), COMBOS, ids=lambda v: v)
def test_train_resume_evaluate_predict(task, method, backbone, tmp_path, phantom_dirs,
                                       multilabel_run):  # fmt: skip
    def make(name):
        return _cfg(task, method, backbone, tmp_path / name, phantom_dirs, multilabel_run)

    full = train(make("full"))
    # Stop after the first step (as SIGTERM would: between steps), then resume.
    assert_same_weights(full, stop_then_resume(make("part"), stop_after=1))

    data = multilabel_run["data"] if task == "multilabel" else phantom_dirs["seg"]
    metrics, _ = evaluate_run(full, [str(data)])
    block = next(iter(metrics["sources"].values()))
    assert block["n_images"] > 0
    from typer.testing import CliRunner

    from multimix.cli.app import app

    out = tmp_path / "pred"
    result = CliRunner().invoke(
        app, ["predict", str(full), str(data / "images"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "predictions.csv").exists()
    json.dumps(metrics)  # metrics are plain JSON
