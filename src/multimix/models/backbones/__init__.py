"""Encoders the network can be built on; see ``base`` for the contract and the registry."""

from multimix.models.backbones.base import (
    BACKBONES,
    DEFAULT_WIDTHS,
    Backbone,
    EncoderTrace,
    TracedLayer,
    available_backbones,
    backbone_class,
    fold_sequentials,
    get_backbone,
    register_backbone,
)

DEFAULT_BACKBONE = "unet"

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "DEFAULT_WIDTHS",
    "Backbone",
    "EncoderTrace",
    "TracedLayer",
    "available_backbones",
    "backbone_class",
    "fold_sequentials",
    "get_backbone",
    "register_backbone",
]
