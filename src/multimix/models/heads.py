"""Heads for multi-label findings: per-finding activation maps and their pooling into zones.

The localization head is a 1x1 convolution over an encoder level at 1/4 of the input
resolution: one activation map per finding, fine enough to place a box. Zone logits are the
mean of a finding's map over each lung zone, so training zone labels shapes the very maps that
boxes are later taken from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multimix.data.zones import zone_onehot
from multimix.models.blocks import PixelLinear

LOCALIZATION_STRIDE = 4  # the maps are computed from the encoder level at 1/4 resolution
LOCALIZATION_LEVEL = 2  # that level for the default backbone (strides 1, 2, 4, ...)


def localization_level(strides: tuple[int, ...]) -> int:
    """The index of the backbone level at ``LOCALIZATION_STRIDE``; one must exist."""
    if LOCALIZATION_STRIDE not in strides:
        raise ValueError(
            f"the localization head needs an encoder level at stride {LOCALIZATION_STRIDE}; "
            f"this backbone's strides are {tuple(strides)}"
        )
    return list(strides).index(LOCALIZATION_STRIDE)


class FindingMaps(nn.Module):
    """One activation map per finding from the shared encoder's features."""

    def __init__(self, in_channels: int, n_findings: int, level: int = LOCALIZATION_LEVEL) -> None:
        super().__init__()
        self.level = level  # which of the encoder's feature maps (see localization_level)
        self.conv = PixelLinear(in_channels, n_findings)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(feats[self.level])


def zone_logits(maps: torch.Tensor, zones: torch.Tensor) -> torch.Tensor:
    """(B, F, h, w) maps and (B, S, S) zone maps -> (B, F, 6): each map's mean over each zone.

    Zones are area-pooled to the maps' resolution, so a map cell straddling two zones counts for
    both in proportion. A zone absent from an image gets logit 0.
    """
    weights = F.adaptive_avg_pool2d(zone_onehot(zones), maps.shape[-2:]).to(maps.dtype)
    total = torch.einsum("bfhw,bzhw->bfz", maps, weights)
    return total / weights.sum(dim=(-2, -1)).clamp_min(1e-6)[:, None, :]


def zones_held(maps: torch.Tensor, zones: torch.Tensor) -> torch.Tensor:
    """(B, F, h, w) maps, (B, S, S) zone maps -> (B, F, 6) bool: the zones a finding is in."""
    return torch.sigmoid(zone_logits(maps, zones)) > 0.5


def classifier_cam(classifier: nn.Sequential, feats: list[torch.Tensor]) -> torch.Tensor:
    """Class activation maps (Zhou et al. 2016) of a global-pool + linear head: (B, F, h, w).

    Exact for the network's classifier: its score is the spatial mean of this map.
    """
    linear = next(m for m in reversed(classifier) if isinstance(m, nn.Linear))
    fmap = feats[-1]
    return torch.einsum("fc,bchw->bfhw", linear.weight, fmap) + linear.bias[None, :, None, None]
