"""The augmentation views a method can ask for by name.

A view is ``fn(images, maps, generator, cfg) -> (images, maps)``: ``maps`` are channels that
must follow the image's geometry (masks, box maps), or ``None``. Register a new one with
``@VIEWS.register("name")`` in a module of this package or of your own.

A stream may also ask for a *derived* view, ``"base>view"``: ``view`` applied to the output of
the stream's earlier view ``base`` (its images and the maps that followed them), so the two
share their geometry. ``"weak>photometric"`` is a strong view pixel-aligned with ``"weak"``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from multimix.core.registry import Registry
from multimix.data import augment

ViewFn = Callable[
    [torch.Tensor, torch.Tensor | None, torch.Generator, augment.AugmentConfig],
    tuple[torch.Tensor, torch.Tensor | None],
]
VIEWS: Registry[ViewFn] = Registry("view")
VIEWS.register("weak")(augment.weak)
VIEWS.register("strong")(augment.strong)
VIEWS.register("photometric")(augment.photometric)
DERIVED = ">"  # "base>view": a view of another view of the same stream
