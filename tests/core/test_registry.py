from __future__ import annotations

import pytest

from multimix.core.errors import ConfigError
from multimix.core.registry import Registry
from multimix.methods.base import METHODS, available_methods
from multimix.tasks import TASKS


def test_register_lookup_and_one_line_errors():
    parts: Registry[type] = Registry("widget")

    @parts.register("b")
    class B:
        pass

    parts.register("a")(int)
    assert list(parts) == ["a", "b"] and parts.get("b") is B and "a" in parts
    with pytest.raises(ConfigError, match="unknown widget 'c'; choose one of a, b"):
        parts.get("c")
    with pytest.raises(ValueError, match="already registered"):
        parts.register("a")(float)
    parts.register("b")(B)  # the same part again is fine
    assert parts.pop("a") is int and list(parts) == ["b"]


def test_built_in_parts_are_discovered_from_their_packages():
    assert {"multiclass", "multilabel"} <= set(TASKS)
    names = {key.split("/")[1] for key in METHODS}
    assert {
        "unet",
        "enc",
        "encssl",
        "umtl",
        "umtls",
        "multimix",
        "multimix-paper",
        "multilabel",
    } <= names
    assert set(available_methods("multilabel")) == {"kacl", "multilabel", "multimix"}
