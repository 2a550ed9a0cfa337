"""Explanation maps: shape, range, targets, and a model left as it was found."""

from __future__ import annotations

import pytest
import torch

from multimix.core.errors import ConfigError
from multimix.explain.attributions import (
    EXPLAINERS,
    explain,
    gradcam,
    integrated_gradients,
    saliency,
    scale_per_image,
)
from multimix.models.net import ModelConfig, MultiMixNet


@pytest.fixture(scope="module")
def model() -> MultiMixNet:
    torch.manual_seed(0)
    return MultiMixNet(ModelConfig(widths=(4, 8, 8, 16, 16)))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))


def hooks(model: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def check_map(attr: torch.Tensor, x: torch.Tensor) -> None:
    assert attr.shape == (x.shape[0], 1, *x.shape[-2:])
    assert attr.dtype == torch.float32 and not attr.requires_grad
    assert torch.isfinite(attr).all() and (attr >= 0).all()
    torch.testing.assert_close(attr.flatten(1).amax(dim=1), torch.ones(x.shape[0]))


@pytest.mark.parametrize("method", sorted(EXPLAINERS))
def test_maps_have_input_shape_and_unit_peak(model, images, method):
    check_map(explain(model, images, method), images)
    tall = torch.rand(1, 1, 48, 40, generator=torch.Generator().manual_seed(2))
    check_map(explain(model, tall, method), tall)


@pytest.mark.parametrize("method", sorted(EXPLAINERS))
def test_target_of_predicted_class_is_the_default(model, images, method):
    model.eval()
    with torch.no_grad():
        predicted = model.classify(model.encode(images)).argmax(dim=1)
    torch.testing.assert_close(
        explain(model, images, method, target=predicted), explain(model, images, method)
    )
    other = explain(model, images, method, target=1 - predicted)
    check_map(other, images)


def test_saliency_is_the_bridge_map(model, images):
    model.eval()
    bridge = model(images)["saliency"]
    torch.testing.assert_close(saliency(model, images), bridge)


@pytest.mark.parametrize("baseline", ["black", "mean", "blur"])
def test_integrated_gradients_baselines(model, images, baseline):
    attr = integrated_gradients(model, images, baseline=baseline, steps=8, internal_batch_size=4)
    check_map(attr, images)


def test_user_errors(model, images):
    with pytest.raises(ConfigError, match="choose from saliency, gradcam, ig"):
        explain(model, images, "lime")
    with pytest.raises(ConfigError, match=r"no layer 'encoder\.levels\.9'"):
        gradcam(model, images, layer="encoder.levels.9")
    with pytest.raises(ConfigError, match="unknown baseline 'noise'"):
        integrated_gradients(model, images, baseline="noise")


def test_model_and_input_are_left_unchanged(model, images):
    model.train()
    frozen = model.encoder.levels[0][0].weight
    frozen.requires_grad_(False)
    try:
        flags = {name: p.requires_grad for name, p in model.named_parameters()}
        state = {k: v.clone() for k, v in model.state_dict().items()}
        x = images.clone()
        n_hooks = hooks(model)
        for method in EXPLAINERS:
            explain(model, x, method)
        assert model.training
        assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
        assert all(p.grad is None for p in model.parameters())
        assert hooks(model) == n_hooks
        # eval mode: batch-norm running statistics were not updated
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, state[key])
        assert not x.requires_grad and x.grad is None
        torch.testing.assert_close(x, images)
    finally:
        frozen.requires_grad_(True)
        model.eval()


def test_scaling_keeps_zero_maps_zero():
    attr = torch.zeros(2, 1, 4, 4)
    attr[1, 0, 1, 2] = 3.0
    attr[1, 0, 0, 0] = -1.0
    scaled = scale_per_image(attr)
    assert (scaled[0] == 0).all()
    assert scaled[1].max() == 1.0 and scaled[1].min() == 0.0
