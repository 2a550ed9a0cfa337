"""Batched, reproducible weak/strong augmentation for FixMatch-style training.

FixMatch needs two views of every unlabelled image: a *weak* one (flip + shift, and a zoom
when ``max_scale`` asks for one) whose
prediction becomes the pseudo-label, and a *strong* one (RandAugment + cutout) that the
model must still classify/segment consistently. Both run inside the training loop on
whole batches, so every operation here is vectorised over the batch (loops only run over
the handful of operation kinds) and costs little next to a network step.

Conventions:

* ``images`` is a float tensor ``(B, C, H, W)`` in ``[0, 1]`` (``C == 1`` for radiographs).
* ``masks`` is ``(B, K, H, W)`` with one binary channel per structure, or ``None``.
  Geometric operations move image and mask with the *same* transform; masks are
  resampled with nearest neighbour so they stay exactly binary. Photometric operations
  and cutout touch the image only: they change appearance, not anatomy.
* All geometric parts (flip, shift, rotation, shear, scale) of one sample are composed
  into a single affine and applied with one ``grid_sample``, so the image is
  interpolated once rather than once per operation.
* Every random number comes from the ``torch.Generator`` passed in (drawn on the
  generator's device, then moved to the data's device), so a seed fixes the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from multimix.core.errors import ConfigError

__all__ = [
    "GEOMETRIC_OPS",
    "OPS",
    "PHOTOMETRIC_OPS",
    "AugmentConfig",
    "photometric",
    "strong",
    "weak",
]

PHOTOMETRIC_OPS: tuple[str, ...] = (
    "identity",
    "autocontrast",
    "equalize",
    "brightness",
    "contrast",
    "gamma",
    "sharpness",
    "posterize",
    "solarize",
    "noise",
    "blur",
)
"""Intensity operations, applied to the image only, in this order."""

GEOMETRIC_OPS: tuple[str, ...] = (
    "rotate",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "scale",
)
"""Spatial operations, folded into the per-sample affine shared by image and mask."""

OPS: tuple[str, ...] = PHOTOMETRIC_OPS + GEOMETRIC_OPS
"""The RandAugment pool that ``strong`` draws ``n_ops`` distinct operations from."""

# Operation strength at magnitude 1 (each sample draws its magnitude uniformly up to
# ``AugmentConfig.magnitude``; signed operations also draw a random direction).
_ROTATE_DEG = 30.0  # rotate by +-30 degrees
_SHEAR = 0.3  # shear factor +-0.3
_TRANSLATE = 0.3  # shift by +-0.3 of the image size
_SCALE = 0.25  # zoom by a factor 1 +- 0.25
_FACTOR = 0.9  # brightness / contrast / sharpness blend factor 1 +- 0.9
_GAMMA_LOG2 = 1.0  # gamma 2**(+-1)
_POSTERIZE_BITS = 4  # drop up to 4 of 8 bits
_NOISE_STD = 0.1  # gaussian noise std up to 0.1
_BLUR_SIGMA = 2.0  # gaussian blur sigma up to 2 pixels
_CUTOUT_FILL = 0.5


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of the weak and strong views.

    ``flip``, ``max_shift`` and ``max_scale`` define the weak view (and the geometric base of
    the strong one); ``n_ops``, ``magnitude`` and ``cutout`` only affect the strong view.

    ``max_scale`` zooms every weak view by a factor drawn log-uniformly in
    ``[1 / (1 + s), 1 + s]``. Why: a classifier trained on one hospital's framing learns the
    apparent size of the chest as a cue (a pediatric-trained model calls normal children
    pneumonia when the image is enlarged by 1.2, and adults, whose chests fill the frame, look
    enlarged to it); zooming the training views takes that cue away. Over three seeds it kept
    ``multimix``'s pediatric test accuracy at 0.911 under a 1.25 zoom against 0.830 without
    it, every other column level (benchmarks/results/label_efficiency_joint_schedule.md,
    section 23).
    """

    flip: bool = True  # horizontal flip p=0.5 (weak)
    max_shift: float = 0.125  # weak translation, fraction of size, uniform in [-s, s] per axis
    max_scale: float = 0.25  # weak zoom, factor log-uniform in [1/(1+s), 1+s] (0: none)
    n_ops: int = 2  # RandAugment: ops drawn per sample
    magnitude: float = 0.5  # RandAugment global magnitude in [0, 1]; each op draws up to it
    cutout: float = 0.25  # cutout square side as fraction of size (0 disables); fill 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_shift <= 1.0:
            raise ConfigError(f"augment max_shift must be in [0, 1], got {self.max_shift}")
        if not 0.0 <= self.max_scale <= 1.0:
            raise ConfigError(f"augment max_scale must be in [0, 1], got {self.max_scale}")
        if isinstance(self.n_ops, bool) or not isinstance(self.n_ops, int):
            raise ConfigError(f"augment n_ops must be an integer, got {self.n_ops!r}")
        if not 0 <= self.n_ops <= len(OPS):
            raise ConfigError(f"augment n_ops must be in [0, {len(OPS)}], got {self.n_ops}")
        if not 0.0 <= self.magnitude <= 1.0:
            raise ConfigError(f"augment magnitude must be in [0, 1], got {self.magnitude}")
        if not 0.0 <= self.cutout <= 1.0:
            raise ConfigError(f"augment cutout must be in [0, 1], got {self.cutout}")


def weak(
    images: Tensor,
    masks: Tensor | None,
    generator: torch.Generator,
    cfg: AugmentConfig = AugmentConfig(),
) -> tuple[Tensor, Tensor | None]:
    """FixMatch weak view: random horizontal flip, translation and (``max_scale``) zoom,
    nothing photometric.

    Returns new tensors (inputs are never modified) with the same shapes and dtypes;
    the mask output is ``None`` when ``masks`` is ``None``.
    """
    _check_inputs(images, masks)
    b, _, h, w = images.shape
    flip, shift, zoom = _draw_weak(b, generator, cfg)
    zero = torch.zeros(b, dtype=torch.float64)
    matrix = _affine(h, w, flip, shift[:, 0], shift[:, 1], zero, zero, zero, zoom - 1.0)
    out, out_masks = _warp(images, masks, matrix)
    return out.clamp_(0.0, 1.0), out_masks


def strong(
    images: Tensor,
    masks: Tensor | None,
    generator: torch.Generator,
    cfg: AugmentConfig = AugmentConfig(),
) -> tuple[Tensor, Tensor | None]:
    """FixMatch strong view: the weak transform, RandAugment, then cutout (image only).

    Each sample draws its own ``cfg.n_ops`` distinct operations from :data:`OPS`, each with
    a magnitude uniform in ``[0, cfg.magnitude]``. Geometric picks join the weak flip and
    shift in one affine shared by image and mask; photometric picks are then applied to
    the image in the fixed order of :data:`PHOTOMETRIC_OPS`. With ``n_ops == 0`` and
    ``cutout == 0`` the result equals ``weak`` with the same generator state.
    """
    return _strong(images, masks, generator, cfg, OPS)


def photometric(
    images: Tensor,
    masks: Tensor | None,
    generator: torch.Generator,
    cfg: AugmentConfig = AugmentConfig(),
) -> tuple[Tensor, Tensor | None]:
    """Strong appearance, no geometry: RandAugment over the photometric ops only, no cutout.

    Applied on top of a weak view, every pixel stays where the weak view put it, so a
    prediction on the weak view is a pixel-aligned target for this one (pixel pseudo-labels).
    Masks come back unchanged (copies).
    """
    still = replace(cfg, flip=False, max_shift=0.0, max_scale=0.0, cutout=0.0)
    return _strong(images, masks, generator, still, PHOTOMETRIC_OPS)


def _strong(
    images: Tensor,
    masks: Tensor | None,
    generator: torch.Generator,
    cfg: AugmentConfig,
    ops: Sequence[str],
) -> tuple[Tensor, Tensor | None]:
    """``strong`` drawing from the pool ``ops`` (tests restrict it to isolate op kinds)."""
    _check_inputs(images, masks)
    unknown = [name for name in ops if name not in OPS]
    if unknown or len(set(ops)) != len(ops):
        raise ValueError(f"ops must be distinct names from OPS, got {list(ops)}")
    b, _, h, w = images.shape
    # Draw order: weak geometry first, so strong with nothing else enabled equals weak.
    flip, shift, zoom = _draw_weak(b, generator, cfg)
    n_kinds = len(ops)
    n_ops = min(cfg.n_ops, n_kinds)
    selected = torch.zeros(b, n_kinds, dtype=torch.bool)
    mags = torch.zeros(b, n_kinds, dtype=torch.float64)
    signs = torch.ones(b, n_kinds, dtype=torch.float64)
    if n_ops > 0:
        order = _rand((b, n_kinds), generator).argsort(dim=1)[:, :n_ops]
        selected.scatter_(1, order, True)
        mags = _rand((b, n_kinds), generator) * cfg.magnitude
        signs = torch.where(_rand((b, n_kinds), generator) < 0.5, -1.0, 1.0)
    # Parameter of each kind for each sample; exactly 0 (the identity) where not picked.
    mags = torch.where(selected, mags, 0.0)
    signed = mags * signs
    column = {name: k for k, name in enumerate(ops)}

    def geo(name: str) -> Tensor:
        return signed[:, column[name]] if name in column else torch.zeros(b, dtype=torch.float64)

    scale = _SCALE * geo("scale")
    if cfg.max_scale > 0:  # compose the weak zoom; without one, bit for bit the old scale
        scale = zoom * (1.0 + scale) - 1.0
    matrix = _affine(
        h,
        w,
        flip,
        shift[:, 0] + _TRANSLATE * geo("translate_x"),
        shift[:, 1] + _TRANSLATE * geo("translate_y"),
        math.radians(_ROTATE_DEG) * geo("rotate"),
        _SHEAR * geo("shear_x"),
        _SHEAR * geo("shear_y"),
        scale,
    )
    out, out_masks = _warp(images, masks, matrix)
    out = out.clamp_(0.0, 1.0)

    for name in PHOTOMETRIC_OPS:
        k = column.get(name)
        if k is None or name == "identity":
            continue
        # Run each op kind on just the samples that picked it: the draws live on the CPU,
        # so choosing rows needs no device sync, and no work is spent on discarded results.
        rows = selected[:, k].nonzero().view(-1)
        if rows.numel() == 0:
            continue
        mag = mags[rows, k].to(device=out.device, dtype=out.dtype)
        sgn = signed[rows, k].to(device=out.device, dtype=out.dtype)
        if rows.numel() == b:
            out = _apply_photometric(name, out, mag, sgn, generator, cfg).clamp_(0.0, 1.0)
            continue
        index = rows.to(out.device)
        part = _apply_photometric(name, out.index_select(0, index), mag, sgn, generator, cfg)
        out = out.index_copy(0, index, part.clamp_(0.0, 1.0))

    if cfg.cutout > 0:
        out = _cutout(out, generator, cfg.cutout)
    return out, out_masks


# --------------------------------------------------------------------------- helpers


def _check_inputs(images: Tensor, masks: Tensor | None) -> None:
    """Reject shapes that would silently broadcast into nonsense."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float tensor (B, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if masks is not None and (
        masks.ndim != 4
        or masks.shape[0] != images.shape[0]
        or masks.shape[-2:] != images.shape[-2:]
    ):
        raise ValueError(
            f"masks must be (B, K, H, W) matching images {tuple(images.shape)}, "
            f"got {tuple(masks.shape)}"
        )


def _rand(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Uniform [0, 1) float64 numbers on the CPU, drawn from ``generator``."""
    return torch.rand(shape, generator=generator, device=generator.device).to("cpu", torch.float64)


def _draw_weak(
    b: int, generator: torch.Generator, cfg: AugmentConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """Flip flags ``(B,)``, shifts ``(B, 2)`` (fraction of size, x then y) and zoom factors
    ``(B,)``.

    Flips and shifts are always drawn, so toggling ``flip`` does not change which shifts come
    out; zooms only with ``max_scale > 0``, so a run without them draws what it always drew.
    """
    coins = _rand((b,), generator)
    shift = (_rand((b, 2), generator) * 2.0 - 1.0) * cfg.max_shift
    flip = (coins < 0.5) & cfg.flip
    zoom = torch.ones(b, dtype=torch.float64)
    if cfg.max_scale > 0:
        zoom = torch.exp((_rand((b,), generator) * 2.0 - 1.0) * math.log1p(cfg.max_scale))
    return flip, shift, zoom


def _affine(
    h: int,
    w: int,
    flip: Tensor,
    tx: Tensor,
    ty: Tensor,
    angle: Tensor,
    shear_x: Tensor,
    shear_y: Tensor,
    scale: Tensor,
) -> Tensor:
    """Forward per-sample affine ``(B, 3, 3)`` in pixel units about the image centre.

    Applied right to left: flip, scale, shear x, shear y, rotate, translate. Working in
    pixel units keeps rotations angle-preserving on non-square images.
    """
    b = flip.shape[0]
    eye = torch.eye(3, dtype=torch.float64).expand(b, 3, 3)
    m_flip = eye.clone()
    m_flip[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    m_scale = eye.clone()
    m_scale[:, 0, 0] = 1.0 + scale
    m_scale[:, 1, 1] = 1.0 + scale
    m_shx = eye.clone()
    m_shx[:, 0, 1] = shear_x
    m_shy = eye.clone()
    m_shy[:, 1, 0] = shear_y
    m_rot = eye.clone()
    cos, sin = torch.cos(angle), torch.sin(angle)
    m_rot[:, 0, 0], m_rot[:, 0, 1] = cos, -sin
    m_rot[:, 1, 0], m_rot[:, 1, 1] = sin, cos
    m_shift = eye.clone()
    m_shift[:, 0, 2] = tx * w
    m_shift[:, 1, 2] = ty * h
    return m_shift @ m_rot @ m_shy @ m_shx @ m_scale @ m_flip


def _warp(images: Tensor, masks: Tensor | None, matrix: Tensor) -> tuple[Tensor, Tensor | None]:
    """Resample image (bilinear) and mask (nearest) with the same forward ``matrix``.

    ``grid_sample`` maps output to input coordinates, so the sampling matrix is the
    inverse of the forward transform, expressed in normalised ``[-1, 1]`` coordinates.
    Identity batches skip resampling entirely and come back as exact copies.
    """
    b, _, h, w = images.shape
    if torch.equal(matrix, torch.eye(3, dtype=matrix.dtype).expand(b, 3, 3)):
        return images.clone(), None if masks is None else masks.clone()
    to_pixels = torch.diag(torch.tensor([w / 2.0, h / 2.0, 1.0], dtype=torch.float64))
    to_norm = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0], dtype=torch.float64))
    theta = (to_norm @ torch.linalg.inv(matrix) @ to_pixels)[:, :2]
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    out = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    if masks is None:
        return out, None
    work = masks if masks.is_floating_point() else masks.to(images.dtype)
    warped = F.grid_sample(
        work, grid.to(work.dtype), mode="nearest", padding_mode="reflection", align_corners=False
    )
    return out, warped.to(masks.dtype)


def _per_sample(values: Tensor) -> Tensor:
    """Reshape ``(B,)`` parameters to broadcast over ``(B, C, H, W)``."""
    return values.view(-1, 1, 1, 1)


def _apply_photometric(
    name: str,
    x: Tensor,
    mag: Tensor,
    signed: Tensor,
    generator: torch.Generator,
    cfg: AugmentConfig,
) -> Tensor:
    """Apply photometric op ``name`` to every sample of ``x`` (the caller picks the rows).

    ``mag`` is the per-sample magnitude in ``[0, 1]``, ``signed`` the same with a random
    sign for operations that can go either way (brighter or darker, ...).
    """
    factor = _per_sample(1.0 + _FACTOR * signed)
    ops: dict[str, Callable[[], Tensor]] = {
        "autocontrast": lambda: _autocontrast(x),
        "equalize": lambda: _equalize(x),
        "brightness": lambda: x * factor,
        "contrast": lambda: _blend(x.mean(dim=(1, 2, 3), keepdim=True), x, factor),
        "gamma": lambda: x.clamp_min(0.0) ** _per_sample(2.0 ** (_GAMMA_LOG2 * signed)),
        "sharpness": lambda: _blend(_smooth3x3(x), x, factor),
        "posterize": lambda: _posterize(x, _POSTERIZE_BITS * mag),
        "solarize": lambda: torch.where(x > _per_sample(1.0 - mag), 1.0 - x, x),
        "noise": lambda: x + _per_sample(_NOISE_STD * mag) * _randn_like(x, generator),
        "blur": lambda: _gaussian_blur(x, _BLUR_SIGMA * mag, _BLUR_SIGMA * cfg.magnitude),
    }
    return ops[name]()


def _blend(base: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance`` style: ``factor`` 0 gives ``base``, 1 gives ``x``, >1 extrapolates."""
    return base + factor * (x - base)


def _autocontrast(x: Tensor) -> Tensor:
    """Stretch each sample to span [0, 1]; constant samples are left as they are."""
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    span = hi - lo
    stretched = (x - lo) / span.clamp_min(1e-6)
    return torch.where(span > 1e-6, stretched, x)


def _equalize(x: Tensor) -> Tensor:
    """Histogram equalisation per sample with a 256-bin CDF (PIL-style look-up table).

    The bin counts are sums of ones, exact in floating point whatever the summation
    order, so the result is deterministic on any device.
    """
    b = x.shape[0]
    flat = x.reshape(b, -1)
    bins = (flat * 255.0).round().long().clamp_(0, 255)
    hist = torch.zeros(b, 256, device=x.device, dtype=x.dtype)
    hist.scatter_add_(1, bins, torch.ones_like(flat))
    cdf = hist.cumsum(dim=1)
    # Pixels in the darkest occupied bin map to 0, the brightest to 1.
    cdf_min = cdf.gather(1, bins.amin(dim=1, keepdim=True))
    denom = flat.shape[1] - cdf_min
    lut = (cdf - cdf_min) / denom.clamp_min(1.0)
    out = lut.gather(1, bins).view_as(x)
    return torch.where(_per_sample(denom.view(b) > 0), out, x)


def _posterize(x: Tensor, drop_bits: Tensor) -> Tensor:
    """Keep ``8 - round(drop_bits)`` bits of an 8-bit quantisation, per sample."""
    step = _per_sample(2.0 ** drop_bits.round())
    levels = torch.floor(x * 255.0)
    return torch.floor(levels / step) * step / 255.0


def _smooth3x3(x: Tensor) -> Tensor:
    """PIL's SMOOTH kernel, the blur that ``ImageEnhance.Sharpness`` blends against."""
    b, c, h, w = x.shape
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = 5.0
    n = b * c
    # One group per channel of one sample: much faster on CPU than a batch of 1-channel maps.
    kernel = (kernel / kernel.sum()).expand(n, 1, 3, 3)
    padded = F.pad(x.reshape(1, n, h, w), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel, groups=n).view(b, c, h, w)


def _gaussian_blur(x: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
    """Separable gaussian blur with a per-sample ``sigma`` (grouped conv, no sample loop).

    The kernel size is fixed by ``max_sigma`` (from the config, not the draw), so the
    work does not depend on the random numbers.
    """
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3.0 * max_sigma))
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    sig = sigma.clamp_min(1e-3).view(b, 1)
    kernel = torch.exp(-(taps.view(1, -1) ** 2) / (2.0 * sig**2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
    n = b * c
    y = F.pad(x.reshape(1, n, h, w), (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, kernel.view(n, 1, 1, -1), groups=n)
    y = F.conv2d(y, kernel.view(n, 1, -1, 1), groups=n)
    return y.view(b, c, h, w)


def _randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator``."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device)
    return noise.to(device=x.device, dtype=x.dtype)


def _cutout(x: Tensor, generator: torch.Generator, fraction: float) -> Tensor:
    """Fill one square per sample with 0.5; its centre is uniform over the image.

    As in the original Cutout, a square centred near a border is clipped by it.
    """
    b, _, h, w = x.shape
    side = max(1, round(fraction * min(h, w)))
    cy = torch.randint(0, h, (b,), generator=generator, device=generator.device)
    cx = torch.randint(0, w, (b,), generator=generator, device=generator.device)
    y0 = _per_sample((cy - side // 2).to(x.device))
    x0 = _per_sample((cx - side // 2).to(x.device))
    ys = torch.arange(h, device=x.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, 1, w)
    box = (ys >= y0) & (ys < y0 + side) & (xs >= x0) & (xs < x0 + side)
    return x.masked_fill(box, _CUTOUT_FILL)
