"""The shared encoder, kept importable here: it now lives in ``models.backbones.unet``.

``MultiMixNet`` builds its encoder through the backbone registry (``models.backbones``); these
names stay so that code written against the single encoder keeps working.
"""

from __future__ import annotations

from multimix.models.backbones.base import EncoderTrace, TracedLayer
from multimix.models.backbones.unet import UNetEncoder as Encoder

__all__ = ["Encoder", "EncoderTrace", "TracedLayer"]
