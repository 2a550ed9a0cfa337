"""The residual backbone: not traceable, so training takes the autograd saliency; checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import multimix.models.saliency as saliency
from multimix.config import TrainConfig
from multimix.engine.checkpoint import load_weights, save_weights
from multimix.engine.trainer import train
from multimix.methods.base import get_method
from multimix.models.backbones.resnet import BasicBlock, ResNetEncoder
from multimix.models.net import ModelConfig, MultiMixNet
from tests.methods.test_methods import _batch

WIDTHS = (4, 8, 8, 16, 16)


def test_resnet_is_residual_and_not_traceable():
    net = MultiMixNet(ModelConfig(widths=WIDTHS, backbone="resnet", backbone_options={"blocks": 2}))
    assert isinstance(net.encoder, ResNetEncoder)
    assert not net.traceable and net.foldable
    assert sum(isinstance(m, BasicBlock) for m in net.encoder.modules()) == 2 * len(WIDTHS)
    with pytest.raises(ValueError, match="at least one block"):
        ResNetEncoder(widths=WIDTHS, blocks=0)


def test_multimix_loss_takes_the_autograd_saliency_for_a_resnet(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a resnet cannot be walked back by hand")

    used = []
    original = saliency.input_saliency

    def recording(*args, **kwargs):
        used.append(True)
        return original(*args, **kwargs)

    monkeypatch.setattr(saliency, "traced_saliency", refuse)
    monkeypatch.setattr(saliency, "input_saliency", recording)
    method = get_method("multimix-paper")
    net = MultiMixNet(ModelConfig(widths=WIDTHS, backbone="resnet")).train()
    loss, logs = method.loss(net, _batch())
    loss.backward()
    assert used and torch.isfinite(loss) and "loss_seg" in logs
    assert all(p.grad is not None for p in net.encoder.parameters())


def test_checkpoint_records_the_backbone_and_round_trips(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(widths=WIDTHS, backbone="resnet", backbone_options={"blocks": 2})
    net = MultiMixNet(cfg).eval()
    path = tmp_path / "w.safetensors"
    save_weights(path, net)
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["model"])
    assert meta["backbone"] == "resnet" and meta["backbone_options"] == {"blocks": 2}
    back = load_weights(path).eval()  # strict: every key of the resnet fits
    assert back.cfg == cfg and isinstance(back.encoder, ResNetEncoder)
    x = torch.rand(2, 1, 32, 32)
    a, b = net(x), back(x)
    for key in a:
        torch.testing.assert_close(b[key], a[key])


def test_a_short_training_run_with_the_resnet_backbone(tmp_path, phantom_dirs):
    cfg = TrainConfig(
        out=str(tmp_path / "run"), class_data=[str(phantom_dirs["cls"])],
        seg_data=[str(phantom_dirs["seg"])], labeled_class=12, labeled_seg=6, image_size=32,
        widths=[8, 16, 16, 32, 32], batch_size=4, steps=4, val_every=4, seed=0,
        backbone="resnet",
    )  # fmt: skip
    run = train(cfg)
    model = load_weights(run / "checkpoints" / "best.safetensors")
    assert model.cfg.backbone == "resnet" and isinstance(model.encoder, ResNetEncoder)
    assert json.loads((run / "config.json").read_text())["backbone"] == "resnet"
