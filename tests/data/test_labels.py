from __future__ import annotations

import pytest

from multimix.core.errors import ConfigError, DataError
from multimix.data.labels import LabelSpace, parse_label_map, parse_list


def test_parse():
    assert parse_list(" Normal, pneumonia ,") == ("normal", "pneumonia")
    assert parse_label_map("covid=pneumonia, ARDS=pneumonia") == {
        "covid": "pneumonia",
        "ards": "pneumonia",
    }
    with pytest.raises(ConfigError, match="source=class"):
        parse_label_map("covid")


def test_label_space_maps_case_insensitively_and_names_the_file():
    space = LabelSpace(("normal", "pneumonia"), {"covid": "pneumonia"})
    assert space.index("NORMAL", "x.png") == 0
    assert space.index("Covid", "x.png") == 1
    with pytest.raises(DataError, match=r"^img/7\.png: label 'ards' is not one of"):
        space.index("ards", "img/7.png")


def test_label_space_rejects_bad_configs():
    with pytest.raises(ConfigError):
        LabelSpace(("normal",))
    with pytest.raises(ConfigError, match="not in --classes"):
        LabelSpace(("normal", "pneumonia"), {"covid": "viral"})
