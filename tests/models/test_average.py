from __future__ import annotations

import pytest
import torch
from torch import nn

from multimix.models.average import WeightAverage, ema_update


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))


def test_ema_update_blends_floats_and_copies_counters():
    target, source = _net(), _net()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    source[1].running_mean.fill_(2.0)
    source[1].num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(target, source, decay=0.75)
    after, src = target.state_dict(), source.state_dict()
    for key, value in after.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.75 * before[key] + 0.25 * src[key], msg=key)
        else:
            assert torch.equal(value, src[key]), key
    assert int(after["1.num_batches_tracked"]) == 7


def test_weight_average_is_a_frozen_copy_whose_decay_warms_up():
    model = _net()
    average = WeightAverage(model, decay=0.99)
    assert average.module is not model
    assert not any(p.requires_grad for p in average.module.parameters())
    assert not average.module.training
    # (1 + step) / (10 + step) until it reaches the asked decay.
    assert average.decay_at(1) == pytest.approx(2 / 11)
    assert average.decay_at(100) == pytest.approx(101 / 110)
    assert average.decay_at(10_000) == 0.99
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    weight = model[0].weight.detach().clone()
    old = average.module[0].weight.clone()
    average.update(model, step=1)
    torch.testing.assert_close(average.module[0].weight, 2 / 11 * old + 9 / 11 * weight)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_weight_average_refuses_a_decay_outside_the_open_interval(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_net(), decay)
