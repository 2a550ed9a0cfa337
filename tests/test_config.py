"""Run configurations: saved and loaded whole; those of runs made before the redesign load."""

from __future__ import annotations

import pytest

from multimix.config import TrainConfig
from multimix.core.errors import ConfigError
from tests.golden.record_legacy import FIXTURES


def test_round_trip(tmp_path):
    cfg = TrainConfig(out=str(tmp_path), method_options={"threshold": 0.9}, seg_data=["x"])
    cfg.save(tmp_path)
    assert TrainConfig.load(tmp_path) == cfg


@pytest.mark.parametrize("name", ["multimix", "multilabel"])
def test_configs_of_runs_before_the_redesign_load(name):
    cfg = TrainConfig.load(FIXTURES / name)
    assert cfg.method_options["threshold"] == 0.7  # was "weights"
    if name == "multilabel":
        assert cfg.task == "multilabel"
        assert cfg.task_options["aux"] == ["segmentation", "localization"]  # was "multilabel"
        assert cfg.make_task().options.aux == ["segmentation", "localization"]
    else:
        assert cfg.task_options == {}
    cfg.make_method(cfg.make_task())
    assert cfg.augment.max_scale == 0.0  # saved before the weak zoom: trained without it


def test_the_weak_zoom_is_on_by_default_and_a_partial_augment_block_keeps_it(tmp_path):
    assert TrainConfig(out="r").augment.max_scale == 0.25
    path = tmp_path / "config.json"
    path.write_text('{"out": "r", "augment": {"cutout": 0.0}}')
    cfg = TrainConfig.from_file(path)
    assert cfg.augment.cutout == 0.0 and cfg.augment.max_scale == 0.25


def test_unknown_method_option_is_one_line():
    cfg = TrainConfig(out="r", seg_data=["x"], method_options={"thresh": 0.9})
    with pytest.raises(ConfigError, match="method 'multimix' has no option thresh"):
        cfg.validate()
