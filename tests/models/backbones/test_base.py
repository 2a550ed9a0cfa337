"""The backbone registry: discovery, lookup, errors, and a backbone added from outside."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import multimix.models.backbones as backbones_pkg
from multimix.config import TrainConfig
from multimix.core.errors import CheckpointError, ConfigError
from multimix.engine.checkpoint import load_weights, save_weights
from multimix.models.backbones import (
    BACKBONES,
    Backbone,
    EncoderTrace,
    available_backbones,
    get_backbone,
    register_backbone,
)
from multimix.models.blocks import norm_layer
from multimix.models.net import ModelConfig, MultiMixNet


def test_registry_lists_the_built_in_backbones_with_descriptions():
    found = available_backbones()
    assert {"unet", "resnet"} <= set(found)
    assert all(isinstance(d, str) and d for d in found.values())
    assert ModelConfig().backbone == "unet"
    assert isinstance(get_backbone("resnet", widths=(4, 8)), Backbone)


def test_built_in_backbones_are_discovered_lazily_not_imported_by_hand():
    code = textwrap.dedent(
        """
        import sys
        from multimix.models.backbones import available_backbones
        assert "multimix.models.backbones.resnet" not in sys.modules
        names = available_backbones()
        assert "multimix.models.backbones.resnet" in sys.modules
        print(",".join(names))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert {"unet", "resnet"} <= set(out.strip().split(","))


def test_a_new_file_in_the_package_registers_itself(tmp_path, monkeypatch):
    (tmp_path / "dropped_in.py").write_text(
        textwrap.dedent(
            """
            from multimix.models.backbones.unet import UNetEncoder
            from multimix.models.backbones import register_backbone

            @register_backbone("dropped-in", "a test's copy of the unet encoder")
            class DroppedIn(UNetEncoder):
                pass
            """
        )
    )
    monkeypatch.setattr(backbones_pkg, "__path__", [*backbones_pkg.__path__, str(tmp_path)])
    monkeypatch.setattr(BACKBONES, "_discovered", False)
    try:
        assert available_backbones()["dropped-in"] == "a test's copy of the unet encoder"
    finally:
        BACKBONES.pop("dropped-in", None)
        sys.modules.pop("multimix.models.backbones.dropped_in", None)


def test_unknown_backbone_is_a_one_line_error_naming_the_registered_ones(tmp_path):
    with pytest.raises(ConfigError) as err:
        get_backbone("vgg")
    message = str(err.value)
    assert "\n" not in message and "'vgg'" in message
    assert "resnet" in message and "unet" in message
    cfg = TrainConfig(out=str(tmp_path), seg_data=["x"], backbone="vgg")
    with pytest.raises(ConfigError, match=r"unknown backbone 'vgg'.*resnet.*unet"):
        cfg.validate()
    TrainConfig(out=str(tmp_path), seg_data=["x"], backbone="resnet").validate()


def test_metadata_without_a_backbone_key_gets_the_original_encoder():
    old = ModelConfig(widths=(4, 8)).to_dict()
    del old["backbone"], old["backbone_options"]
    cfg = ModelConfig.from_dict(old)
    assert cfg.backbone == "unet" and cfg.backbone_options == {}
    assert list(MultiMixNet(cfg).state_dict()) == list(
        MultiMixNet(ModelConfig(widths=(4, 8))).state_dict()
    )


def test_registering_a_taken_name_or_a_non_backbone_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("unet")(type("Other", (PlainEncoder,), {}))
    with pytest.raises(TypeError, match="subclass"):
        register_backbone("not-a-backbone")(nn.Conv2d)


# -- a backbone defined only here (docs/backbones.md walks through the same class) -------------
class PlainEncoder(Backbone):
    """Plain encoder: one conv -> norm -> ReLU per level, max-pooling between levels."""

    foldable = True  # each batch norm follows its conv in an nn.Sequential

    def __init__(
        self, in_channels: int = 1, widths: tuple[int, ...] = (8, 16), norm: str = "batch"
    ) -> None:
        super().__init__()
        chans = (in_channels, *widths)
        self.levels = nn.ModuleList(
            nn.Sequential(
                nn.MaxPool2d(2) if i else nn.Identity(),
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                norm_layer(norm, chans[i + 1]),
                nn.ReLU(inplace=True),
            )
            for i in range(len(widths))
        )
        self.channels = tuple(widths)
        self.strides = tuple(2**i for i in range(len(widths)))

    def forward(self, x: torch.Tensor, trace: EncoderTrace | None = None) -> list[torch.Tensor]:
        if trace is not None:
            raise ValueError("the plain backbone cannot be traced")
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats


@pytest.fixture
def plain_registered():
    """Registered for one test only, so the contract tests see the built-in backbones alone."""
    register_backbone("plain")(PlainEncoder)
    yield
    BACKBONES.pop("plain")


@pytest.mark.usefixtures("plain_registered")
def test_a_backbone_defined_outside_the_package_builds_a_network():
    assert available_backbones()["plain"].startswith("Plain encoder")
    net = MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16), backbone="plain"))
    assert isinstance(net.encoder, PlainEncoder) and not net.traceable
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    feats = net.encode(x)
    assert [f.shape[1] for f in feats] == [4, 8, 8, 16, 16]
    out = net.eval()(torch.rand(2, 1, 32, 32))
    assert out["mask_logits"].shape == (2, 1, 32, 32) and out["saliency"].shape == (2, 1, 32, 32)


def test_a_checkpoint_of_an_unregistered_backbone_is_a_one_line_error(tmp_path):
    path = tmp_path / "plain.safetensors"
    register_backbone("plain")(PlainEncoder)
    try:
        save_weights(path, MultiMixNet(ModelConfig(widths=(4, 8), backbone="plain")))
    finally:
        BACKBONES.pop("plain")
    with pytest.raises(CheckpointError) as err:
        load_weights(path)
    assert "\n" not in str(err.value) and "unknown backbone 'plain'" in str(err.value)
    assert "unet" in str(err.value)


def test_a_backbone_at_other_strides_is_refused_by_the_decoder():
    class Coarse(PlainEncoder):
        def __init__(self, **options: object) -> None:
            super().__init__(**options)
            self.strides = tuple(2 * s for s in self.strides)

    register_backbone("coarse")(Coarse)
    try:
        with pytest.raises(ValueError, match="strides 1, 2, 4"):
            MultiMixNet(ModelConfig(widths=(4, 8), backbone="coarse"))
    finally:
        BACKBONES.pop("coarse")
