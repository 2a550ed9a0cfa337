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


def test_unknown_method_option_is_one_line():
    cfg = TrainConfig(out="r", seg_data=["x"], method_options={"thresh": 0.9})
    with pytest.raises(ConfigError, match="method 'multimix' has no option thresh"):
        cfg.validate()
