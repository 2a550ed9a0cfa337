"""``multimix``: the project's joint method, semi-supervised on masks as well as on classes.

The paper's objective (``multimix-paper``, in :mod:`multimix.methods.multimix`) lets mask-less
images reach the decoder only through a weak KL term between predictions on *different*
images, so thousands of unlabeled radiographs teach the decoder nothing. Here every unlabeled
image of every source trains both heads, teacher-student style (FixMatch, UniMatch):

* one unlabeled stream in two views that share their geometry: ``weak`` and
  ``weak>photometric`` (strong appearance, same pixels), so a prediction on the weak view is a
  pixel-aligned target for the strong one;
* the strong views are CutMixed between unlabeled images: a box of another image is pasted in,
  and its pseudo-mask with it (the class pseudo-label stays the base image's: the box is an
  occlusion of at most a quarter of the image, as FixMatch's cutout is); with
  ``cutmix_from=masked`` the box comes from a masked image of the same step instead, with its
  true mask as the target there (copy-paste between labeled and unlabeled images, as BCP does);
* pixel pseudo-masks: decoder probabilities on the weak view, kept per pixel where the
  confidence ``max(p, 1 - p)`` reaches ``pixel_threshold``, train the decoder on the strong view;
* class pseudo-labels guarded against collapse under a domain shift: distribution alignment
  (ReMixMatch) scales the weak-view probabilities by the labeled class prior over their running
  mean, so a new hospital's images cannot all drift into one class; ``freematch`` uses
  self-adaptive per-class thresholds instead, ``fixed`` the paper's fixed threshold;
* the few masked images are drawn in the strong view (RandAugment's geometry and appearance
  with the mask following): with 10 masks, seed 0 lifted lung Dice on pediatric phantoms from
  0.448 to 0.735 and on the adult test from 0.893 to 0.919; seed 2 was level (0.818 both);
* the labeled class images are drawn in the weak view (``class_view``; ``strong`` draws them
  in RandAugment's view, as the masked images are);
* class pseudo-labels on the images of every source (``pseudo_from=all``), or only on those of
  the class and unlabeled sources (``class``): a source given for its masks may hold any mix
  of classes, and its images then get pixel pseudo-masks only;
* the targets come from the student's own weak pass (``teacher=self``: free, the weak views
  are in the batch anyway) or from an EMA teacher (``teacher=ema``: one forward without a
  graph, and the weak views leave the student's pass, whose backward was spent on rows that
  feed no loss).

* the unlabeled stream is drawn every ``unlabeled_every``-th step (default 4), the steps in
  between are supervised only: the unlabeled views are most of a step's cost, and at equal CPU
  minutes more supervised steps won (seed 0, 8 minutes: adult lung Dice 0.928 against 0.916
  with the stream on every step; benchmarks/results/label_efficiency_joint_schedule.md).
  Drawn at step 0 only, three seeds did better still (0.930 against 0.924): at 8 CPU minutes
  the unlabeled images do not yet pay for their views (same write-up, section 8);
* and not before step ``unlabeled_from`` (default 400): pseudo-labels of a barely trained
  model are mostly noise. Three seeds at 8 CPU minutes: adult lung Dice 0.929 against 0.924
  without the warm-up, AUC 0.986 against 0.982, pediatric phantoms level (section 10).

Every stream goes through the shared encoder in one concatenated pass (batch norm sees them
together); the decoder runs on the masked, weak and strong rows (no weak rows with an EMA
teacher). With ``unlabeled_size`` below the run's image size the unlabeled views are shrunk
(area averaging) and go through a pass of their own: a quarter of the arithmetic at half the
side, for pseudo-labels drawn at another scale.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from multimix.core.batch import LABELED, MASKED, UNLABELED, Batch, Stream
from multimix.core.errors import ConfigError
from multimix.methods.base import LossWeights, Method, register
from multimix.methods.losses import bernoulli_kl, dice_bce
from multimix.models.average import ema_update
from multimix.models.net import leading_rows
from multimix.models.saliency import bridge_saliency, bridge_trace

STRONG = "weak>photometric"  # the strong view, pixel-aligned with the weak one
GUARDS = ("da", "freematch", "fixed")
VIEWS_OF_LABELED = ("weak", "strong")  # the views a labeled stream may be drawn in
TEACHERS = ("self", "ema")
PSEUDO_FROM = ("class", "all")
CUTMIX_FROM = ("unlabeled", "masked")


@dataclass
class JointOptions(LossWeights):
    """The paper's weights plus the pixel pseudo-label, CutMix, guard and teacher settings."""

    consistency: float = field(
        default=0.0,
        metadata={"flag": "w-consistency", "help": "The paper's KL term (0: replaced)."},
    )
    pixel: float = field(default=1.0, metadata={"flag": "w-pixel", "help": "Pixel pseudo-masks."})
    pixel_threshold: float = field(
        default=0.9, metadata={"help": "Confidence a pixel pseudo-label needs."}
    )
    cutmix: float = field(default=0.5, metadata={"help": "Share of strong views CutMixed."})
    cutmix_from: str = field(
        default="unlabeled",
        metadata={
            "help": "Where the CutMix boxes come from: unlabeled|masked (masked: a masked "
            "image's box with its true mask as the target there)."
        },
    )
    mask_view: str = field(
        default="strong", metadata={"help": "View of the masked images: strong|weak."}
    )
    class_view: str = field(
        default="weak", metadata={"help": "View of the class-labeled images: weak|strong."}
    )
    guard: str = field(default="da", metadata={"help": "Class pseudo-labels: da|freematch|fixed."})
    teacher: str = field(default="self", metadata={"help": "Targets from: self|ema."})
    pseudo_from: str = field(
        default="all",
        metadata={
            "help": "Class pseudo-labels on images of: class|all sources (class: only "
            "--class-data and --unlabeled-data; mask-only sources get pixel pseudo-masks only)."
        },
    )
    bridge: bool = field(
        default=True, metadata={"help": "Feed the classifier's saliency to the decoder."}
    )
    unlabeled_every: int = field(
        default=4,
        metadata={"help": "Draw the unlabeled stream every N-th step (1: every step)."},
    )
    unlabeled_size: int = field(
        default=0,
        metadata={
            "help": "Side in pixels of the unlabeled views, which then get an encoder pass of "
            "their own (0: the run's image size, one pass with the other streams)."
        },
    )
    unlabeled_from: int = field(
        default=400,
        metadata={"help": "Supervised warm-up: no unlabeled stream before step N."},
    )
    ema_decay: float = field(default=0.99, metadata={"help": "EMA teacher decay."})
    momentum: float = field(default=0.999, metadata={"help": "Running class-statistics decay."})

    def validate(self) -> None:
        super().validate()
        if self.pixel < 0:
            raise ConfigError("--w-pixel must be >= 0")
        if not 0.5 <= self.pixel_threshold <= 1.0:
            raise ConfigError("--pixel-threshold must lie in [0.5, 1]")
        if not 0.0 <= self.cutmix <= 1.0:
            raise ConfigError("--cutmix must lie in [0, 1]")
        if self.guard not in GUARDS:
            raise ConfigError(f"--guard must be one of {', '.join(GUARDS)}, not {self.guard!r}")
        for name in ("mask_view", "class_view"):
            if getattr(self, name) not in VIEWS_OF_LABELED:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be one of {', '.join(VIEWS_OF_LABELED)}, "
                    f"not {getattr(self, name)!r}"
                )
        if self.teacher not in TEACHERS:
            raise ConfigError(
                f"--teacher must be one of {', '.join(TEACHERS)}, not {self.teacher!r}"
            )
        if self.pseudo_from not in PSEUDO_FROM:
            raise ConfigError(
                f"--pseudo-from must be one of {', '.join(PSEUDO_FROM)}, not {self.pseudo_from!r}"
            )
        if self.unlabeled_every < 1:
            raise ConfigError("--unlabeled-every must be >= 1")
        if self.unlabeled_size < 0 or 0 < self.unlabeled_size < 32:
            raise ConfigError("--unlabeled-size must be 0 or at least 32")
        if self.unlabeled_size and self.consistency > 0:
            raise ConfigError(
                "--w-consistency compares masked and unlabeled masks pixel by pixel, so it "
                "needs --unlabeled-size 0"
            )
        if self.cutmix_from not in CUTMIX_FROM:
            raise ConfigError(
                f"--cutmix-from must be one of {', '.join(CUTMIX_FROM)}, not {self.cutmix_from!r}"
            )
        if self.cutmix_from == "masked" and self.unlabeled_size:
            raise ConfigError(
                "--cutmix-from masked pastes masked images into the unlabeled views, so it "
                "needs --unlabeled-size 0"
            )
        if self.unlabeled_from < 0:
            raise ConfigError("--unlabeled-from must be >= 0")
        for name in ("ema_decay", "momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must lie in [0, 1)")


def pixel_pseudo_loss(
    strong_logits: torch.Tensor,
    weak_probs: torch.Tensor,
    threshold: float,
    sure: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BCE of the strong view against the weak view's confident pixels.

    ``weak_probs`` are detached probabilities aligned pixel for pixel with ``strong_logits``.
    A pixel counts where ``max(p, 1 - p) >= threshold``, or where ``sure`` (bool, same shape:
    pixels whose target is a true mask) says so; the loss is averaged over all pixels, so an
    unsure image weighs less. Returns the loss and the boolean keep mask.
    """
    keep = torch.maximum(weak_probs, 1 - weak_probs) >= threshold
    if sure is not None:
        keep = keep | sure.to(keep.device)
    target = (weak_probs >= 0.5).to(strong_logits.dtype)
    per = F.binary_cross_entropy_with_logits(
        strong_logits.float(), target.float(), reduction="none"
    )
    return (per * keep).mean(), keep


def cutmix_boxes(
    n: int, size: tuple[int, int], share: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A box per image (bool (n, 1, H, W)) and the image each box comes from.

    A share ``share`` of the images gets a box covering 5-25% of the image, its aspect ratio
    between 1:2 and 2:1; the rest get an empty box. The source of image i is image i+1 (mod n),
    never itself when n > 1.
    """
    h, w = size
    rand = torch.rand((n, 4), generator=generator)
    on = torch.rand((n,), generator=generator) < share
    area = (0.05 + 0.20 * rand[:, 0]) * h * w
    aspect = torch.exp((rand[:, 1] * 2 - 1) * 0.6931)
    bh = (area * aspect).sqrt().clamp(1, h).round().long()
    bw = (area / aspect).sqrt().clamp(1, w).round().long()
    y0 = (rand[:, 2] * (h - bh + 1)).long()
    x0 = (rand[:, 3] * (w - bw + 1)).long()
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    box = (ys >= y0.view(-1, 1, 1)) & (ys < (y0 + bh).view(-1, 1, 1))
    box = box & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + bw).view(-1, 1, 1))
    box = box & on.view(-1, 1, 1)
    source = torch.roll(torch.arange(n), -1) if n > 1 else torch.arange(n)
    return box.unsqueeze(1), source


def mix(
    a: torch.Tensor, box: torch.Tensor, source: torch.Tensor, donor: torch.Tensor | None = None
) -> torch.Tensor:
    """``a`` with each image's box taken from image ``source[i]`` of ``donor`` (default: ``a``
    itself); for images, masks and confidences alike."""
    donor = a if donor is None else donor.to(a.device, a.dtype)
    return torch.where(box.to(a.device), donor[source.to(a.device)], a)


def shrink(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images resized to ``size`` pixels a side by area averaging (antialiased)."""
    return F.interpolate(x, size=(size, size), mode="area").contiguous(
        memory_format=torch.channels_last
    )


def joint_pass(
    model: nn.Module, x: torch.Tensor, n_dec: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class logits of every row and mask logits of the first ``n_dec``, from one encoder pass;
    with a bridge, the decoder also gets the classifier's saliency of those rows. With
    ``n_dec == 0`` the decoder and the saliency walk are skipped (the masks are ``None``)."""
    if n_dec == 0:
        return model.classify(model.encode(x)), None
    bridged = model.bridge is not None
    trace = bridge_trace(model.traceable, x) if bridged else None
    feats = model.encode(x, trace)
    logits = model.classify(feats)
    decoder_feats = [leading_rows(f, n_dec) for f in feats]
    if not bridged:  # the saliency walk only feeds the bridge: without one it is skipped
        return logits, model.segment(decoder_feats)
    sal = bridge_saliency(logits, feats, trace, x, n_dec)
    return logits, model.segment(decoder_feats, x[:n_dec].detach(), sal)


class ClassGuard:
    """Keeps class pseudo-labels from collapsing onto one class when the unlabeled images
    come from another domain.

    ``da``: distribution alignment (ReMixMatch): weak-view probabilities times the labeled
    class prior over their running mean, renormalised, then the fixed threshold.
    ``freematch``: self-adaptive thresholds (FreeMatch): a global threshold from the running
    mean confidence, scaled per class by the running mean probability over its maximum.
    ``fixed``: the paper's fixed threshold.
    """

    def __init__(self, kind: str, n_classes: int, threshold: float, momentum: float) -> None:
        self.kind, self.threshold, self.momentum = kind, threshold, momentum
        uniform = torch.full((n_classes,), 1.0 / n_classes)
        self.prior = uniform.clone()  # labeled class frequencies (running)
        self.mean_probs = uniform.clone()  # running mean of weak-view probabilities
        self.confidence = torch.tensor(1.0 / n_classes)  # running mean max probability

    def update_prior(self, targets: torch.Tensor) -> None:
        counts = torch.bincount(targets.cpu(), minlength=len(self.prior)).float()
        if counts.sum() > 0:
            freq = counts / counts.sum()
            self.prior = self.momentum * self.prior + (1 - self.momentum) * freq

    def targets(
        self, weak_logits: torch.Tensor, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-labels and the keep mask for the weak-view logits (no gradient).

        ``rows`` (bool) are the rows that may get a pseudo-label; only they move the running
        statistics, and the others are never kept.
        """
        probs = torch.softmax(weak_logits.detach().float(), dim=1)
        if rows is None:
            rows = torch.ones(len(probs), dtype=torch.bool, device=probs.device)
        rows = rows.to(probs.device)
        counted = bool(rows.any())  # a batch with no such row leaves the statistics alone
        if counted:
            batch_mean = probs[rows].mean(0).cpu()
            self.mean_probs = self.momentum * self.mean_probs + (1 - self.momentum) * batch_mean
        if self.kind == "da":
            scale = (self.prior / self.mean_probs.clamp_min(1e-6)).to(probs.device)
            probs = probs * scale
            probs = probs / probs.sum(1, keepdim=True)
        confidence, label = probs.max(dim=1)
        if self.kind == "freematch":
            if counted:
                batch_conf = confidence[rows].mean().cpu()
                self.confidence = self.momentum * self.confidence + (1 - self.momentum) * batch_conf
            local = self.mean_probs / self.mean_probs.max()
            per_class = (self.confidence * local).to(probs.device)
            keep = confidence >= per_class[label]
        else:
            keep = confidence >= self.threshold
        return label, keep & rows

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"prior": self.prior, "mean_probs": self.mean_probs, "confidence": self.confidence}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prior = state["prior"].clone().float()
        self.mean_probs = state["mean_probs"].clone().float()
        self.confidence = state["confidence"].clone().float()


@register
class MultiMix(Method):
    """Joint classifier and decoder with pixel pseudo-masks, CutMix, guarded class
    pseudo-labels and the saliency bridge (see the module docstring)."""

    name = "multimix"
    description = "joint + pixel pseudo-masks, CutMix, guarded pseudo-labels, bridge"
    Options = JointOptions

    def __init__(self, options: Any = None, task: Any = None) -> None:
        super().__init__(options, task)
        n_classes = len(task.classes) if task is not None else 2
        o = self.options
        self.guard = ClassGuard(o.guard, n_classes, o.threshold, o.momentum)
        self.teacher: nn.Module | None = None

    @property
    def streams(self) -> dict[str, Stream]:
        return {
            MASKED: Stream(MASKED, (self.options.mask_view,), masks=True),
            LABELED: Stream(LABELED, (self.options.class_view,), targets=True),
            UNLABELED: Stream(UNLABELED, ("weak", STRONG), size="unlabeled"),
        }

    def streams_at(self, step: int) -> dict[str, Stream]:
        """All streams every ``unlabeled_every``-th step, else only the two labeled ones: the
        unlabeled views are most of a step's cost, and a supervised step is cheap enough
        that more of them can fit the same minutes. None before ``unlabeled_from``: the
        pseudo-labels of a barely trained model are mostly noise."""
        streams = self.streams
        if step < self.options.unlabeled_from or step % self.options.unlabeled_every:
            del streams[UNLABELED]
        return streams

    @property
    def uses_bridge(self) -> bool:
        return self.options.bridge

    def setup(self, model: nn.Module) -> nn.Module | None:
        if self.options.teacher == "ema":
            self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
        return None

    def _teacher_targets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """EMA teacher's class logits and mask probabilities on the weak view; no masks (and
        no decoder or saliency walk) when no pixel pseudo-mask reads them."""
        segment = self.options.pixel > 0
        out = self.teacher(x, segment=segment)
        masks = torch.sigmoid(out["mask_logits"].float()) if segment else None
        return out["logits"].float(), masks

    def loss(
        self, model: nn.Module, batch: Batch, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        w, task = self.options, self.task
        seg, cls, unl = batch[MASKED], batch[LABELED], batch.get(UNLABELED)
        seg_view = seg[w.mask_view]
        cls_x = cls[w.class_view].x
        n_seg, n_u, n_w = len(seg), 0, 0
        # Smaller unlabeled views cannot join the other rows' pass: they get one of their own.
        own_pass = unl is not None and w.unlabeled_size not in (0, seg_view.x.shape[-1])
        unlabeled_rows: list[torch.Tensor] = []
        if unl is not None:  # absent on the steps ``streams_at`` leaves it out
            weak_x, strong_x = unl["weak"].x, unl[STRONG].x
            if own_pass:
                weak_x, strong_x = (shrink(v, w.unlabeled_size) for v in (weak_x, strong_x))
            n_u = len(unl)
            gen = torch.Generator().manual_seed(step * 1_000_003 + 17)  # resumable
            box, source = cutmix_boxes(n_u, tuple(strong_x.shape[-2:]), w.cutmix, gen)
            # The boxes' donor: the other unlabeled images (None), or the masked ones, image i
            # getting a box of masked image i, its true mask with it.
            donor = seg_view if w.cutmix_from == "masked" else None
            if donor is not None:
                source = torch.arange(n_u) % n_seg
            strong_x = mix(strong_x, box, source, None if donor is None else donor.x)
            # With an EMA teacher (and no KL term) the student's weak rows would feed no
            # loss: they are left out of its pass, which saves their forward and backward.
            keep_weak = self.teacher is None or w.consistency > 0
            n_w = n_u if keep_weak else 0
            unlabeled_rows = [weak_x, strong_x] if keep_weak else [strong_x]
        # The unlabeled rows reach the decoder only for a loss that reads their masks (the
        # pixel pseudo-masks, the KL term); else the decoder and its saliency walk skip them.
        decode_unlabeled = w.pixel > 0 or w.consistency > 0
        n_u_dec = n_w + n_u if decode_unlabeled else 0
        if own_pass:
            seg_logits, seg_masks = joint_pass(model, torch.cat([seg_view.x, cls_x]), n_seg)
            cls_logits = seg_logits[n_seg:]
            u_logits, u_masks = joint_pass(model, torch.cat(unlabeled_rows), n_u_dec)
        else:
            # One concatenated pass, decoder rows first: masked, weak, strong; then the
            # labeled class rows (batch norm sees every stream together).
            n_before_cls = n_seg + n_w + n_u
            logits, mask_logits = joint_pass(
                model, torch.cat([seg_view.x, *unlabeled_rows, cls_x]), n_seg + n_u_dec
            )
            seg_masks, cls_logits = mask_logits[:n_seg], logits[n_before_cls:]
            u_logits, u_masks = logits[n_seg:n_before_cls], mask_logits[n_seg:]
        logs: dict[str, float] = {}

        seg_loss = dice_bce(seg_masks, seg_view.masks, seg.known)
        total = w.seg * seg_loss
        logs["loss_seg"] = seg_loss.item()

        ce, cls_logs = task.supervised_loss(cls_logits, cls.targets)
        total = total + w.cls * ce
        logs |= cls_logs
        self.guard.update_prior(cls.targets)
        if unl is None:
            logs["loss"] = total.item()
            return total, logs

        strong_logits = u_logits[n_w:]
        if self.teacher is not None:
            with torch.no_grad():
                weak_logits, weak_masks = self._teacher_targets(weak_x)
        else:
            weak_logits = u_logits[:n_u]
            weak_masks = torch.sigmoid(u_masks[:n_u].detach().float()) if n_u_dec else None

        if w.pixel > 0:
            target = mix(weak_masks, box, source, None if donor is None else donor.masks)
            sure = None  # pixels whose target is a true mask: a masked donor's, where known
            if donor is not None:
                sure = (box & seg.known.cpu()[source][:, :, None, None]).to(target.device)
            pixel, keep = pixel_pseudo_loss(u_masks[n_w:], target, w.pixel_threshold, sure)
            total = total + w.pixel * pixel
            logs["loss_pixel"] = pixel.item()
            logs["pixel_kept"] = keep.float().mean().item()
        if w.consistency > 0:
            m = min(n_seg, n_u)
            kl = bernoulli_kl(seg_masks[:m].detach(), u_masks[:m])
            total = total + w.consistency * kl
            logs["loss_kl"] = kl.item()

        allowed = unl.class_domain if w.pseudo_from == "class" else None
        label, keep = self.guard.targets(weak_logits, allowed)
        per = F.cross_entropy(strong_logits.float(), label, reduction="none")
        pseudo = (per * keep).mean()
        total = total + w.pseudo * pseudo
        logs["loss_pseudo"] = pseudo.item()
        logs["pseudo_kept"] = keep.float().mean().item()
        logs["loss"] = total.item()
        return total, logs

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.teacher is None:
            return
        ema_update(self.teacher, model, self.options.ema_decay)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"guard": self.guard.state_dict()}
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "guard" in state:
            self.guard.load_state_dict(state["guard"])
        if self.teacher is not None and "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
