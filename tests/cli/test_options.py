"""``multimix train``'s options come from the config dataclasses; ``--set`` reaches the rest."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from multimix.cli.app import TRAIN_OPTIONS, app
from multimix.cli.options import apply_options, set_key
from multimix.config import TrainConfig
from multimix.core.errors import ConfigError


def test_every_config_field_is_an_option_and_defaults_are_not_copied():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    generated = {spec.field for spec, _, _ in TRAIN_OPTIONS.values() if spec.target == "config"}
    assert generated == fields - {"out", "augment", "method_options", "task_options"}
    for _, option, _ in TRAIN_OPTIONS.values():
        assert option.default is None  # left out: the dataclass default applies
    help_text = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    for flag in ("--w-seg", "--threshold", "--aux", "--ml-loss", "--backbone", "--set"):
        assert flag in help_text


def test_flags_and_set_fill_config_method_and_task_options():
    cfg = TrainConfig(out="r", task="multilabel", method="multilabel")
    values = {
        "widths": "8,16",
        "labeled_class": "all",
        "method_seg": "2.5",
        "task_aux": "Segmentation",
    }
    sets = ["dropout=0.3", "augment.cutout=0", "method.threshold=0.9", "task.uncertain=soft"]
    apply_options(cfg, values, TRAIN_OPTIONS, sets)
    assert cfg.widths == [8, 16] and cfg.labeled_class is None and cfg.dropout == 0.3
    assert cfg.augment.cutout == 0.0
    assert cfg.method_options == {"seg": 2.5, "threshold": 0.9}
    assert cfg.task_options == {"aux": ["segmentation"], "uncertain": "soft"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("nope", "1", "no such option"),
        ("augment.nope", "1", "augment has no option 'nope'"),
        ("augment", "1", "options of its own"),
        ("method.nope", "1", "method 'multimix' has no option 'nope'"),
        ("task.aux", "segmentation", "task 'multiclass' has no option 'aux'"),
        ("dropout", "high", "cannot read 'high' as a number"),
        ("augment.flip", "maybe", "as true or false"),
    ],
)
def test_set_errors_are_one_line(key, value, message):
    with pytest.raises(ConfigError, match=message):
        set_key(TrainConfig(out="r"), key, value)


def test_train_cli_rejects_an_option_of_another_task(tmp_path, phantom_dirs):
    args = ["train", "--out", str(tmp_path / "r"), "--seg-data", str(phantom_dirs["seg"]),
            "--aux", "segmentation"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--aux: task 'multiclass' has no option 'aux' (an option of task multilabel)" in (
        result.output
    )
