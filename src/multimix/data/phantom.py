"""Procedural synthetic chest radiographs with exact ground truth.

Why: the demo and most tests must run with no downloads, and segmentation needs masks that are
exactly right. Every structure here is an analytic shape (superellipse lungs, elliptic heart,
capsule clavicles, warped-stripe ribs), so the masks are the very regions that were drawn, and
every random choice comes from the caller's ``numpy.random.Generator``, so one seed always gives
the same bytes.

Images are composed in an attenuation-like space (bright = dense), then mapped to 8 bits through a
per-style tone curve. The ``style`` argument is a domain: "adult" and "pediatric" differ in anatomy
proportions, contrast, brightness and noise, so a model trained on one sees a shift on the other.

Findings are kept as a list of strings with one ``(finding, x, y, w, h)`` box per lesion, so more
finding kinds (effusion, cardiomegaly, several opacity kinds), label noise and detection targets can
be added without changing the shape of :class:`Phantom`.
"""

from __future__ import annotations

import csv
import math
import numbers
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["GENERATOR_VERSION", "STYLES", "Phantom", "make_phantom", "write_source"]

GENERATOR_VERSION = "1"
STYLES = ("adult", "pediatric")
_MIN_SIZE = 32
_SOURCE_MARK = "# Synthetic phantom chest radiographs"
CARDIOMEGALY_SCALE = 1.3  # heart size multiplier of an enlarged heart (multi-label mode)


@dataclass
class Phantom:
    """One synthetic radiograph and its exact ground truth."""

    image: np.ndarray  # uint8 (size, size)
    masks: dict[str, np.ndarray]  # bool (size, size): "lungs", "heart", "clavicles"
    label: str  # "normal" or "pneumonia"
    findings: list[str] = field(default_factory=list)  # [] or ["opacity"]
    boxes: list[tuple[str, int, int, int, int]] = field(default_factory=list)  # (f, x, y, w, h)


@dataclass(frozen=True)
class _Style:
    """Domain parameters: what differs between an adult and a pediatric acquisition."""

    lung_scale: float  # lung size relative to the frame
    lung_aspect: float  # height multiplier (children: shorter, rounder lungs)
    heart_scale: float  # heart size relative to the frame
    rib_spacing: float  # vertical rib pitch, normalised units
    rib_curve: float  # how much ribs droop laterally
    gamma: float  # tone curve exponent
    contrast: float  # output gain
    offset: float  # output brightness offset
    noise: float  # pixel noise std (0..1 scale)
    body_width: float  # torso half-width
    mediastinum: float  # extra upper mediastinal width (thymus in children)


_STYLES: dict[str, _Style] = {
    "adult": _Style(
        lung_scale=1.0,
        lung_aspect=1.0,
        heart_scale=1.0,
        rib_spacing=0.135,
        rib_curve=0.8,
        gamma=1.0,
        contrast=1.0,
        offset=0.0,
        noise=0.012,
        body_width=0.97,
        mediastinum=0.0,
    ),
    "pediatric": _Style(
        lung_scale=0.86,
        lung_aspect=0.88,
        heart_scale=1.12,
        rib_spacing=0.115,
        rib_curve=0.6,
        gamma=0.7,
        contrast=0.78,
        offset=0.1,
        noise=0.028,
        body_width=0.9,
        mediastinum=0.07,
    ),
}


def smoothstep(t: np.ndarray) -> np.ndarray:
    """C1 ramp 0..1; soft edges look like radiographs, hard ones like clip art."""
    t = np.minimum(np.maximum(t, 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def _resize(a: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    """Upsample a float field with PIL (pixel-centre aligned, far faster than ndimage.zoom)."""
    if a.shape[0] == size:
        return a
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32)).resize((size, size), resample)
    return np.array(img, dtype=np.float32)


def _upsample2(a: np.ndarray) -> np.ndarray:
    """Bilinear x2 upsampling of a 2-D field, pixel-centre aligned, edges clamped.

    Plain numpy: several times faster than a PIL round trip, and identical to PIL's bilinear.
    """
    n0, n1 = a.shape[-2:]
    rows = np.empty((*a.shape[:-2], 2 * n0, n1), dtype=np.float32)
    q = 0.75 * a
    rows[..., 0::2, :] = q + 0.25 * np.concatenate([a[..., :1, :], a[..., :-1, :]], axis=-2)
    rows[..., 1::2, :] = q + 0.25 * np.concatenate([a[..., 1:, :], a[..., -1:, :]], axis=-2)
    out = np.empty((*a.shape[:-2], 2 * n0, 2 * n1), dtype=np.float32)
    q = 0.75 * rows
    out[..., 0::2] = q + 0.25 * np.concatenate([rows[..., :1], rows[..., :-1]], axis=-1)
    out[..., 1::2] = q + 0.25 * np.concatenate([rows[..., 1:], rows[..., -1:]], axis=-1)
    return out


def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: x as a row, y as a column (y points down)."""
    c = ((np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0).astype(np.float32)
    return c[None, :], c[:, None]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, sigma: float) -> np.ndarray:
    """Correlated noise in [0, 1], built coarse and upsampled because full-size blurs are slow."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, sigma, mode="wrap")
    coarse -= coarse.min()
    coarse /= max(float(coarse.max()), 1e-6)
    return np.clip(_resize(coarse, size, Image.Resampling.BICUBIC), 0.0, 1.0)


def _rotate(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to (cx, cy), rotated by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    return dx * c + dy * s, -dx * s + dy * c


def _lung(
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    side: int,
    dims: tuple[float, float],
    st: _Style,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate signed distance (>0 inside) of one lung, and its diaphragm line y(x).

    ``side`` is -1 for the image-left lung (the patient's right: wider, higher diaphragm) and +1
    for the image-right lung. ``dims`` (half-width, half-height) is shared by both lungs so they
    stay a matching pair. The shape is a superellipse whose apex tapers and whose medial border
    is straighter than its lateral one, with a few low-order wobbles, cut by a domed diaphragm so
    the costophrenic angle is sharp.
    """
    right = side < 0
    s = st.lung_scale
    a = dims[0] * s * (1.07 if right else 0.94) * rng.uniform(0.97, 1.03)
    b = dims[1] * s * st.lung_aspect * rng.uniform(0.97, 1.03)
    cx = side * rng.uniform(0.4, 0.46) * (0.9 + 0.1 * s)
    cy = rng.uniform(-0.04, 0.03) + (1.0 - s) * 0.15
    tilt = math.radians(rng.uniform(1.0, 5.0)) * side  # apex leans medially
    u, v = _rotate(x, y, cx, cy, tilt)
    un, vn = u / a, v / b
    taper = rng.uniform(0.3, 0.42)  # narrower towards the apex
    un = un / (1.0 - taper * np.clip(-vn, 0.0, 1.0) ** 2)
    p_lat, p_med = rng.uniform(2.0, 2.5), rng.uniform(3.0, 4.0)
    aun = np.abs(un)
    pu = np.where(un * side < 0, aun**p_med, aun**p_lat)
    d = (pu + np.abs(vn) ** 2.3) ** (1.0 / 2.3)
    theta = np.arctan2(vn, un)
    wobble = 1.0
    for k in (2, 3, 5):
        wobble = wobble + rng.uniform(-0.025, 0.025) * np.cos(k * theta + rng.uniform(0, 6.3))
    shape = (wobble - d) * min(a, b)
    # Diaphragm dome: highest near the lung's middle, lower laterally and medially.
    peak_x = cx - side * a * rng.uniform(0.0, 0.25)
    level = cy + b * rng.uniform(0.6, 0.68) * (0.95 if right else 1.0)
    y_d = level + rng.uniform(0.7, 1.1) * (x - peak_x) ** 2
    return np.minimum(shape, y_d - y), y_d


def _capsule(
    x: np.ndarray,
    y: np.ndarray,
    p0: tuple[float, float],
    p1: tuple[float, float],
    radius: float,
    bend: float,
) -> np.ndarray:
    """Signed distance (>0 inside) to a gently arched bar from p0 to p1: a clavicle."""
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    length = math.hypot(vx, vy)
    ux, uy = vx / length, vy / length
    dx, dy = x - p0[0], y - p0[1]
    t = (dx * ux + dy * uy) / length
    tc = np.clip(t, 0.0, 1.0)
    n = (-dx * uy + dy * ux) * math.copysign(1.0, vx) + bend * np.sin(np.pi * tc)
    r = radius * (1.0 + 0.4 * (1.0 - tc))  # thicker medial (sternal) end
    return r - np.sqrt(((t - tc) * length) ** 2 + n * n)


def _ribs(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, spine_x: float, st: _Style
) -> np.ndarray:
    """Thin curved bright arcs: posterior ribs (clear) and anterior ribs (faint), both sides."""
    out = np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=np.float32)
    for side in (-1, 1):
        d = np.maximum((x - spine_x) * side - 0.05, 0.0)  # lateral distance from the spine edge
        lift, curve = rng.uniform(0.4, 0.55), st.rib_curve * rng.uniform(0.85, 1.15)
        w = y - (-lift * d + curve * d * d)  # straightens the ribs into horizontal stripes
        w0 = rng.uniform(-0.8, -0.72)
        pitch = st.rib_spacing * rng.uniform(0.92, 1.08)
        grow = pitch * rng.uniform(0.02, 0.05)  # lower ribs are further apart
        rel = np.maximum(w - w0, 0.0)
        k = (-pitch + np.sqrt(pitch * pitch + 4.0 * grow * rel)) / (2.0 * grow)
        kr = np.round(k)
        dist = np.abs(k - kr) * (pitch + 2.0 * grow * kr)
        thick = rng.uniform(0.034, 0.042)
        prof = smoothstep((thick - dist) / (0.6 * thick)) * (0.75 + 0.25 * (dist / thick) ** 2)
        reach = rng.uniform(0.8, 0.92)
        fade = smoothstep((reach - d) / 0.1) * smoothstep((d + 0.03) / 0.08)
        out += (prof * ((kr < 10) & (w > w0 - 0.04)) * fade) * rng.uniform(0.12, 0.16)
        # Anterior ribs: faint, running down-medially from the lateral wall.
        wa = y - 0.5 * (reach - d)
        ka = (wa - w0) / (pitch * 1.2)
        da = np.abs(ka - np.round(ka)) * pitch * 1.2
        pa = smoothstep((0.022 - da) / 0.012) * ((ka > -0.5) & (ka < 5.5))
        out += pa * smoothstep((reach - d) / 0.1) * smoothstep((d - 0.15) / 0.25) * 0.04
    return out


def opacities(
    rng: np.random.Generator, lungs: np.ndarray, gate: np.ndarray
) -> tuple[np.ndarray, list[tuple[str, int, int, int, int]]]:
    """Soft patchy bright blobs confined to the lungs, and one box per blob.

    ``gate`` is the lungs' soft interior profile, exactly zero outside the lung mask; every blob
    is multiplied by it, so an opacity can never leak into the mediastinum or the abdomen.
    """
    size = lungs.shape[0]
    x, y = grid(size)
    out = np.zeros((size, size), dtype=np.float32)
    boxes: list[tuple[str, int, int, int, int]] = []
    inside = np.flatnonzero(lungs)
    patch = _smooth_noise(rng, size, max(8, size // 12), 1.0)
    for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
        row, col = divmod(int(inside[rng.integers(inside.size)]), size)
        sx, sy = rng.uniform(0.07, 0.15), rng.uniform(0.07, 0.15)
        reach = math.ceil(3.0 * max(sx, sy) * size / 2.0)  # 3 sigma, in pixels
        r0, r1 = max(row - reach, 0), min(row + reach + 1, size)
        c0, c1 = max(col - reach, 0), min(col + reach + 1, size)
        cx, cy = float(x[0, col]), float(y[row, 0])
        u, v = _rotate(x[:, c0:c1], y[r0:r1], cx, cy, rng.uniform(0.0, math.pi))
        g = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
        strength = rng.uniform(0.24, 0.36)
        out[r0:r1, c0:c1] += strength * g * (0.45 + 0.8 * patch[r0:r1, c0:c1]) * gate[r0:r1, c0:c1]
        visible = (g > 0.25) & lungs[r0:r1, c0:c1]
        rows = np.flatnonzero(visible.any(axis=1))
        cols = np.flatnonzero(visible.any(axis=0))
        bx, by = c0 + int(cols[0]), r0 + int(rows[0])
        boxes.append(("opacity", bx, by, int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1))
    return out, boxes


def make_phantom(
    rng: np.random.Generator,
    size: int = 256,
    pneumonia: bool = False,
    style: str = "adult",
    with_findings: Collection[str] | None = None,
) -> Phantom:
    """Draw one synthetic frontal chest radiograph.

    With ``with_findings`` (a subset of ``phantom_findings.FINDINGS``), ``pneumonia`` is ignored
    and the image gets exactly those findings (multi-label mode); its label is then ``"a|b"`` or
    ``"No Finding"``. Without it the output is unchanged.

    Anatomy is composed at half resolution (it is smooth, and this halves the cost) and
    upsampled; the masks come from the upsampled signed distances, so they match the drawn
    structures exactly. All anatomy and noise are drawn before the opacities, so the same
    generator state gives the same patient with or without pneumonia, byte-identical outside the
    lungs.
    """
    st = _check_style(style)
    size = _check_int("size", size, _MIN_SIZE)
    work = size // 2 if size % 2 == 0 and size >= 2 * _MIN_SIZE else size
    x, y = grid(work)
    px = 2.0 / work  # one working pixel in normalised units

    # Body: attenuation follows the chord through an elliptic torso, so edges fall off softly.
    bx = rng.uniform(-0.03, 0.03)
    bw = st.body_width * rng.uniform(0.96, 1.04)
    neck = rng.uniform(0.26, 0.34)
    half_w = neck + (bw - neck) * smoothstep((y - rng.uniform(-1.08, -0.96)) / 0.4)
    body = np.sqrt(np.sqrt(np.clip(1.0 - ((x - bx) / half_w) ** 2, 0.0, 1.0)))
    att = 0.04 + rng.uniform(0.48, 0.54) * body

    # Heart: a tilted ellipse low and to the image right (the patient's left).
    hs = st.heart_scale * (CARDIOMEGALY_SCALE if "cardiomegaly" in (with_findings or ()) else 1.0)
    ha, hb = rng.uniform(0.29, 0.35) * hs, rng.uniform(0.21, 0.25) * hs
    hcy = rng.uniform(0.32, 0.4)
    hu, hv = _rotate(x, y, rng.uniform(0.08, 0.14), hcy, rng.uniform(0.35, 0.6))
    heart_m = (1.0 - np.sqrt((hu / ha) ** 2 + (hv / hb) ** 2)) * hb

    # Lungs, notched by the heart (mostly the image-right lung), so the two masks never overlap.
    lung_size = (rng.uniform(0.3, 0.35), rng.uniform(0.68, 0.76))
    m_right, yd_right = _lung(rng, x, y, -1, lung_size, st)
    m_left, yd_left = _lung(rng, x, y, 1, lung_size, st)
    lung_m = np.minimum(np.maximum(m_right, m_left), -heart_m)
    air = rng.uniform(0.32, 0.38)

    # Spine with vertebral bodies, mediastinum (wider in children: thymus), trachea.
    sx = bx + rng.uniform(-0.02, 0.02)
    period = rng.uniform(0.085, 0.1)
    vert = 0.7 + 0.3 * np.cos(np.pi * (y - rng.uniform(0.0, 1.0)) / period) ** 2
    spine = smoothstep((0.07 - np.abs(x - sx)) / 0.035) * vert
    mw = 0.2 + st.mediastinum * smoothstep((-0.2 - y) / 0.5) + 0.06 * smoothstep(y + 0.5)
    medi = smoothstep((mw - np.abs(x - sx)) / 0.1) * smoothstep((y + 0.75) / 0.3)
    trachea = smoothstep((0.03 - np.abs(x - sx)) / 0.015) * smoothstep((-0.35 - y) / 0.15)

    # Clavicles.
    clav_y = rng.uniform(-0.64, -0.54)
    clav_m = np.full((work, work), -1.0, dtype=np.float32)
    for side in (-1, 1):
        p0 = (sx + side * rng.uniform(0.06, 0.1), clav_y + rng.uniform(-0.02, 0.02))
        p1 = (bx + side * rng.uniform(0.62, 0.74), clav_y - rng.uniform(0.1, 0.18))
        c = _capsule(x, y, p0, p1, rng.uniform(0.034, 0.042), rng.uniform(0.01, 0.03))
        clav_m = np.maximum(clav_m, c)

    ribs = _ribs(rng, x, y, sx, st)
    # The abdomen starts under each hemidiaphragm, and right under the heart's centre medially.
    below = smoothstep((y - np.minimum(np.where(x < sx, yd_right, yd_left), hcy + 0.08)) / 0.12)
    texture = _smooth_noise(rng, work, max(8, work // 4), 0.8)
    hilum = np.zeros_like(att)
    for side in (-1, 1):
        hx, hy = sx + side * rng.uniform(0.2, 0.26), rng.uniform(-0.12, 0.0)
        hilum += np.exp(-(((x - hx) / 0.13) ** 2 + ((y - hy) / 0.18) ** 2))

    heart_soft = smoothstep(heart_m / 0.05)
    edge = 1.5 * px + 0.01  # width of the lung border ramp, normalised units
    lung_soft = smoothstep(lung_m / edge) * (0.78 + 0.22 * smoothstep(lung_m / 0.2))
    # Mediastinum, heart and abdomen are one continuous dense region, not stacked layers.
    dense = rng.uniform(0.11, 0.14) * np.maximum(np.maximum(medi, 0.9 * heart_soft), below)
    att += body * (dense + 0.07 * spine * (1.0 - 0.6 * heart_soft) * (1.0 - 0.5 * below))
    att -= 0.09 * trachea * body
    att -= air * lung_soft
    att += lung_soft * (0.1 * hilum + 0.16 * (texture - 0.5))
    att += ribs * body * (1.0 - 0.85 * below)
    att += rng.uniform(0.12, 0.17) * smoothstep(clav_m / (1.5 * px))
    # Smooth low-frequency variation (separable, cheap).
    fx, fy = rng.uniform(0.5, 1.8, size=2)
    lowf = np.cos(fx * x + rng.uniform(0, 6.3)) * np.cos(fy * y + rng.uniform(0, 6.3))
    att += rng.uniform(0.02, 0.05) * lowf + rng.uniform(-0.03, 0.03) * y

    # Back to full size; masks are taken from the same fields that drew the image.
    if work != size:
        att, lung_m, heart_m, clav_m = (_upsample2(f) for f in (att, lung_m, heart_m, clav_m))
    att = att.astype(np.float32)  # a fresh array: the in-place steps below must not alias
    masks = {"lungs": lung_m > 0, "heart": heart_m > 0, "clavicles": clav_m > 0}
    # Unit-variance triangular noise: looks like Gaussian noise at a quarter of the cost.
    uni = rng.random((2, size, size), dtype=np.float32)
    noise = (uni[0] - uni[1]) * np.float32(math.sqrt(6.0))

    # Opacities last, so the anatomy above does not depend on the label.
    findings: list[str] = []
    boxes: list[tuple[str, int, int, int, int]] = []
    label = "pneumonia" if pneumonia else "normal"
    if with_findings is not None:
        from multimix.data.phantom_findings import draw_findings

        gate = smoothstep(lung_m / edge)
        findings, boxes = draw_findings(rng, set(with_findings), att, masks, gate, sx)
        label = "|".join(findings) or "No Finding"
    elif pneumonia:
        gate = smoothstep(lung_m / edge)  # follows the air it replaces; 0 outside the lungs
        opacity, boxes = opacities(rng, masks["lungs"], gate)
        att += opacity
        findings = ["opacity"]

    # Noise grows with density (a crude stand-in for quantum noise), then the style's tone curve.
    noise *= st.noise * (0.5 + 0.7 * att)
    att += noise
    np.clip(att, 0.0, 1.0, out=att)
    if st.gamma != 1.0:
        att **= st.gamma
    att *= 255.0 * st.contrast
    att += 255.0 * st.offset + 0.5
    image = np.clip(att, 0.0, 255.0, out=att).astype(np.uint8)
    return Phantom(
        image=image,
        masks=masks,
        label=label,
        findings=findings,
        boxes=boxes,
    )


def _check_int(name: str, value: object, minimum: int) -> int:
    """Validate an integer argument (numpy integers welcome, bools not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: object) -> float:
    """Validate a fraction in [0, 1]; NaN fails the comparison and is refused too."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_style(style: object) -> _Style:
    if style not in _STYLES:
        raise ValueError(f"unknown phantom style {style!r}; choose one of {', '.join(STYLES)}")
    return _STYLES[style]  # type: ignore[index]


def write_source(
    out: str | Path,
    count: int,
    seed: int = 0,
    size: int = 256,
    positive_fraction: float = 0.5,
    mask_fraction: float = 1.0,
    label_fraction: float = 1.0,
    style: str = "adult",
    images_per_patient: int = 2,
    multilabel: bool = False,
    label_noise: float = 0.0,
) -> Path:
    """Write ``count`` phantoms as a source folder in the shared layout and return its path.

    Layout: ``images/``, ``masks/`` (lung masks for a seeded subset), ``labels.csv`` (a seeded
    labelled subset), ``meta.csv`` (every image, with patient ids shared by consecutive images so
    patient-grouped splits are exercised) and ``SOURCE.md``. With ``multilabel`` the images get
    independent findings (:mod:`multimix.data.phantom_findings`; ``positive_fraction`` is unused),
    ``labels.csv`` holds ``|``-separated findings with each finding flipped with probability
    ``label_noise``, ``labels_clean.csv`` the true ones, ``boxes.csv`` their exact boxes, and
    the masks go to ``masks/lungs/``, ``masks/heart/`` and ``masks/clavicles/``. Image ``i``
    depends only on ``seed``, ``i``, its label, ``size`` and ``style``, not on ``count``.
    Rewriting a folder this function wrote before replaces it; a non-empty foreign folder is
    refused rather than mixed into.
    """
    count = _check_int("count", count, 1)
    seed = _check_int("seed", seed, 0)
    size = _check_int("size", size, _MIN_SIZE)
    per_patient = _check_int("images_per_patient", images_per_patient, 1)
    fractions = [
        _check_fraction(name, value)
        for name, value in (
            ("positive_fraction", positive_fraction),
            ("mask_fraction", mask_fraction),
            ("label_fraction", label_fraction),
        )
    ]
    label_noise = _check_fraction("label_noise", label_noise)
    _check_style(style)

    root = Path(out)
    if root.exists() and any(root.iterdir()):
        src = root / "SOURCE.md"
        ours = src.is_file() and src.read_text("utf-8", errors="replace").startswith(_SOURCE_MARK)
        if not ours:
            raise ValueError(f"{root}: not empty and not a phantom source; will not write into it")
        for sub in ("images", "masks", "masks/lungs", "masks/heart", "masks/clavicles"):
            for old in (root / sub).glob("*.png"):
                old.unlink()
        for old in ("boxes.csv", "labels_clean.csv"):
            (root / old).unlink(missing_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)

    choose = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    n_pos, n_mask, n_lab = (round(f * count) for f in fractions)
    positive = set(choose.permutation(count)[:n_pos].tolist())
    with_mask = set(choose.permutation(count)[:n_mask].tolist())
    labelled = set(choose.permutation(count)[:n_lab].tolist())

    meta_rows: list[tuple[str, str, str, str]] = []
    label_rows: list[tuple[str, str]] = []
    clean_rows: list[tuple[str, str]] = []
    box_rows: list[tuple] = []
    for i in range(count):
        name = f"ph{seed}-{i:05d}.png"
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, i)))
        if multilabel:
            ph = _multilabel_phantom(seed, i, rng, size, style, label_noise, root, name)
            clean_rows.append((name, "|".join(ph.findings) or "No Finding"))
            box_rows += [(name, *box) for box in ph.boxes]
        else:
            ph = make_phantom(rng, size=size, pneumonia=i in positive, style=style)
        Image.fromarray(ph.image).save(root / "images" / name)
        if i in with_mask and multilabel:
            for structure, mask in ph.masks.items():
                (root / "masks" / structure).mkdir(exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / structure / name)
        elif i in with_mask:
            Image.fromarray(ph.masks["lungs"].astype(np.uint8) * 255).save(root / "masks" / name)
        if i in labelled:
            label_rows.append((name, ph.label))
        meta_rows.append((name, f"ph{seed}-p{i // per_patient:05d}", style, ph.label))

    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["image", "label"])
        w.writerows(label_rows)
    with open(root / "meta.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["image", "patient_id", "style", "label"])
        w.writerows(meta_rows)
    if multilabel:
        _write_multilabel_tables(root, clean_rows, box_rows)
    n_patients = (count + per_patient - 1) // per_patient
    (root / "SOURCE.md").write_text(
        f"{_SOURCE_MARK}\n\n"
        f"Synthetic {style} frontal chest radiographs from multimix.data.phantom (generator "
        f"version {GENERATOR_VERSION}), seed {seed}, {size}x{size} 8-bit PNG: {count} images of "
        f"{n_patients} synthetic patients ({per_patient} per patient), {n_pos} pneumonia "
        f"and {count - n_pos} normal, {n_mask} exact lung masks, {n_lab} labelled and "
        f"{count - n_lab} unlabeled; no real patient data.\n"
        + (_MULTILABEL_NOTE.format(noise=label_noise) if multilabel else ""),
        encoding="utf-8",
    )
    return root


_MULTILABEL_NOTE = (
    "\nMulti-label mode: the pneumonia/normal counts above do not apply. Findings "
    "(cardiomegaly, effusion, nodule, opacity) are drawn independently per image; labels.csv "
    "holds them |-separated ('No Finding' when none), each finding flipped with probability "
    "{noise}; labels_clean.csv holds the true findings, boxes.csv (image,label,x,y,w,h) their "
    "exact boxes, masks/lungs|heart|clavicles/ the exact masks.\n"
)


def _multilabel_phantom(
    seed: int,
    i: int,
    rng: np.random.Generator,
    size: int,
    style: str,
    label_noise: float,
    root: Path,
    name: str,
) -> Phantom:
    """Phantom ``i`` in multi-label mode; ``label`` is the noisy label, ``findings`` the truth."""
    from multimix.data.phantom_findings import FINDING_RATES, FINDINGS

    draw = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, i)))
    wanted = {f for f in FINDINGS if draw.random() < FINDING_RATES[f]}
    ph = make_phantom(rng, size=size, style=style, with_findings=wanted)
    flip = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, i)))
    noisy = [f for f in FINDINGS if (f in ph.findings) != (flip.random() < label_noise)]
    ph.label = "|".join(noisy) or "No Finding"
    return ph


def _write_multilabel_tables(root: Path, clean_rows: list, box_rows: list) -> None:
    for file, header, rows in (
        ("labels_clean.csv", ["image", "label"], clean_rows),
        ("boxes.csv", ["image", "label", "x", "y", "w", "h"], box_rows),
    ):
        with open(root / file, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)
