"""What one training step consumes: streams of images, each in the views a method asked for.

A method names its streams (:class:`Stream`: which rows, which augmentation views, whether
masks and targets come along). The data layer draws them into a :class:`Batch`: stream name ->
:class:`Draw` (the rows drawn, their targets and mask availability) -> view name -> :class:`View`
(the augmented images, and the masks and task maps warped with them). A new view or stream is
then a name in a method's request, not a new field here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Row pools a stream draws from (the keys of ``TrainingData.rows``).
MASKED = "seg"  # training images whose masks the run may use
UNMASKED = "seg_unlabeled"  # training images without (usable) masks
LABELED = "cls"  # training images whose labels the run may use
UNLABELED = "unlabeled"  # training images without (usable) labels
PRETRAIN = "pretrain"  # images with pseudo-masks for a pre-training phase


@dataclass(frozen=True)
class Stream:
    """One stream a method draws each step.

    ``rows`` names the pool; ``views`` the augmentations (:mod:`multimix.data.views`) applied
    to the same drawn images, in order; ``masks`` carries ground-truth masks through the views;
    ``targets`` carries the task's targets (and any map the task warps with the image);
    ``size`` is ``"labeled"`` (``batch_size`` images) or ``"unlabeled"`` (times
    ``unlabeled_ratio``).
    """

    rows: str
    views: tuple[str, ...] = ("weak",)
    masks: bool = False
    targets: bool = False
    size: str = "labeled"


@dataclass
class View:
    """One augmentation of a stream's images; masks and task maps follow its geometry."""

    x: torch.Tensor  # float (B, C, H, W) in [0, 1]
    masks: torch.Tensor | None = None  # float (B, K, H, W), 0/1
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # the task's (zones, ...)


@dataclass
class Draw:
    """What one stream drew: its rows, their targets and mask availability, and its views."""

    rows: torch.Tensor
    views: dict[str, View]
    known: torch.Tensor | None = None  # bool (B, K): which structures have a mask
    targets: torch.Tensor | None = None  # the task's targets of the rows
    # bool (B,): the row's source was given for the class task (class or unlabeled data)
    class_domain: torch.Tensor | None = None

    @classmethod
    def of(
        cls,
        masks: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        **views: torch.Tensor,
    ) -> Draw:
        """A draw made by hand (tests, benchmarks): ``Draw.of(weak=x, masks=m, known=k)``."""
        rows = torch.arange(len(next(iter(views.values()))))
        return cls(rows, {n: View(x, masks) for n, x in views.items()}, known, targets)

    def __getitem__(self, view: str) -> View:
        return self.views[view]

    def __len__(self) -> int:
        return len(self.rows)


class Batch(dict[str, Draw]):
    """Stream name -> :class:`Draw`."""

    def to(self, device: torch.device) -> Batch:
        """Move to ``device``; images go channels-last, which convolutions run faster on."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t

        out = Batch()
        for name, draw in self.items():
            views = {}
            for v, view in draw.views.items():
                extras = {k: move(e) for k, e in view.extras.items()}
                views[v] = View(move(view.x), move(view.masks), extras)
            out[name] = Draw(
                draw.rows,
                views,
                move(draw.known),
                move(draw.targets),
                move(draw.class_domain),
            )
        return out
