"""Exponential moving averages of a network's weights.

Two users: the EMA teacher of ``--method multimix --teacher ema`` (targets from a smoothed
student) and the trainer's ``--weight-ema`` (the run validates, keeps and ships the averaged
weights instead of the last step's). Averaging the weights along the trajectory lands in a
flatter region than any single step, which is what weight averaging (SWA, SWAD, EMA) is used
for: steadier validation picks and less sensitivity to a shift between hospitals. Batch-norm
running statistics are averaged like the weights; integer buffers (batch counts) are copied.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """``target = decay * target + (1 - decay) * source``, state entry by state entry."""
    for t, s in zip(target.state_dict().values(), source.state_dict().values(), strict=True):
        if t.is_floating_point():
            t.mul_(decay).add_(s.detach(), alpha=1 - decay)
        else:
            t.copy_(s)


class WeightAverage:
    """An EMA copy of ``model`` (no gradients, eval mode), updated after each optimizer step.

    The decay warms up as ``min(decay, (1 + step) / (10 + step))`` (timm's ``ModelEma``
    schedule): early in a run the average follows the weights closely, so a validation at
    step 50 scores a trained network rather than one still dominated by its initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay applied by the update after optimizer step ``step`` (counted from 1)."""
        return min(self.decay, (1 + step) / (10 + step))

    def update(self, model: nn.Module, step: int) -> None:
        ema_update(self.module, model, self.decay_at(step))

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
