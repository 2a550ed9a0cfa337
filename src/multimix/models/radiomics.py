"""Radiomic features of image regions, batched in torch, with PyRadiomics' definitions.

``radiomic_features(images, masks)`` computes, for every image of a batch and the region its
mask marks, the features below at once (no loop over images), on the device the batch is on.
On one CPU thread it is a few times faster than PyRadiomics, which takes one image at a time
(``benchmarks/results/radiomics_speed.json``, in process CPU time), and it saves the round trip
to numpy/SimpleITK inside a training step. It is not differentiable
(the discretisation and the sort are not), and does not need to be: the method that uses it
(``methods/kacl.py``) treats the features as a fixed description of a region.

Every definition is PyRadiomics' (3.x, 2D, pixel spacing 1, ``voxelArrayShift`` 0) and is
checked against it in ``tests/models/test_radiomics.py``. Values are the image's grey values as
given (pass 8-bit images as 0..255 for PyRadiomics' numbers; first-order features scale with
them, texture and shape features do not).

Discretisation (grey-level entropy/uniformity and the GLCM), as PyRadiomics does it:

* fixed bin count ``bin_count`` (the default here, 16): the region's [min, max] is cut into
  ``bin_count`` equal bins, the maximum in the top bin (PyRadiomics ``binCount``);
* or fixed bin width ``bin_width`` (PyRadiomics' default setting, ``binWidth=25``): bins of that
  width counted from 0, ``floor(x / W) - floor(min / W) + 1``.

First order, over the region's N pixels X (the names are PyRadiomics' feature names):

==================== ====================================================================
``mean``             mean of X
``variance``         mean of (X - mean)^2 (population variance)
``skewness``         m3 / m2^1.5 with central moments m_k; 0 for a flat region
``kurtosis``         m4 / m2^2 (not the excess: a normal distribution gives 3); 0 if flat
``energy``           sum of X^2 (grows with the region's size)
``rms``              sqrt(energy / N)
``entropy``          -sum p(i) log2(p(i) + eps) over the discretised grey-level histogram p
``uniformity``       sum p(i)^2 of the same histogram
``minimum`` ...      ``minimum``, ``p10``, ``median``, ``p90``, ``maximum``: percentiles with
                     linear interpolation (numpy's default); ``iqr`` = p75 - p25
``mad``              mean absolute deviation from the mean
==================== ====================================================================

Grey-level co-occurrence (GLCM) of the discretised region: pairs of region pixels at distance 1
in the four directions 0, 45, 90, 135 degrees, each direction's matrix made symmetric and
normalised to p(i, j), a feature computed per direction and averaged over the directions that
have pairs (PyRadiomics' defaults):

==================== ====================================================================
``glcm_contrast``    sum (i - j)^2 p(i, j)
``glcm_correlation`` (sum i j p(i, j) - mu_x mu_y) / (sigma_x sigma_y); 1 where sigma is 0
``glcm_joint_energy`` sum p(i, j)^2 (PyRadiomics' "JointEnergy", Haralick's ASM)
``glcm_idm``         sum p(i, j) / (1 + (i - j)^2): homogeneity (PyRadiomics "Idm")
``glcm_id``          sum p(i, j) / (1 + |i - j|): homogeneity 1 (PyRadiomics "Id")
==================== ====================================================================

Shape of the region (PyRadiomics ``shape2D``; marching squares over the pixel centres):

==================== ====================================================================
``area``             number of pixels ("PixelSurface")
``mesh_area``        area enclosed by the marching-squares contour ("MeshSurface")
``perimeter``        length of that contour ("Perimeter")
``major_axis``       4 sqrt(lambda_max) of the pixel coordinates' covariance
``minor_axis``       4 sqrt(lambda_min)
``elongation``       sqrt(lambda_min / lambda_max) ("Elongation")
``eccentricity``     sqrt(1 - lambda_min / lambda_max): not a PyRadiomics feature, derived
                     from the same eigenvalues (0 for a disc, towards 1 for a line)
==================== ====================================================================

An empty mask gives zeros for every feature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FIRST_ORDER = (
    "mean", "variance", "skewness", "kurtosis", "energy", "rms", "entropy", "uniformity",
    "minimum", "p10", "median", "p90", "maximum", "iqr", "mad",
)  # fmt: skip
GLCM = ("glcm_contrast", "glcm_correlation", "glcm_joint_energy", "glcm_idm", "glcm_id")
SHAPE = (
    "area", "mesh_area", "perimeter", "major_axis", "minor_axis", "elongation", "eccentricity",
)  # fmt: skip
FEATURES = FIRST_ORDER + GLCM + SHAPE

# The GLCM directions as (dy, dx): 0, 45, 90 and 135 degrees at distance 1.
DIRECTIONS = ((0, 1), (-1, 1), (-1, 0), (-1, -1))
_EPS = float(torch.finfo(torch.float64).eps)  # numpy.spacing(1), PyRadiomics' epsilon

# Marching squares over the 2x2 pixel squares of the zero-padded mask, indexed by the square's
# corners inside (bit 0 top-left, 1 top-right, 2 bottom-right, 3 bottom-left). The contour
# passes through the edge midpoints, so each case has a fixed contour length and enclosed area.
_HALF_DIAGONAL = math.sqrt(0.5)
_PERIMETER = [0.0] * 16
_AREA = [0.0] * 16
for _code in range(16):
    _n = bin(_code).count("1")
    if _n in (1, 3):  # one corner cut off: a half-diagonal segment
        _PERIMETER[_code], _AREA[_code] = _HALF_DIAGONAL, (1 / 8 if _n == 1 else 7 / 8)
    elif _n == 2 and _code in (5, 10):  # diagonal pair: two segments, corners kept apart
        _PERIMETER[_code], _AREA[_code] = 2 * _HALF_DIAGONAL, 1 / 4
    elif _n == 2:  # an edge pair: one straight segment across the square
        _PERIMETER[_code], _AREA[_code] = 1.0, 1 / 2
    elif _n == 4:
        _AREA[_code] = 1.0


def discretize(
    values: torch.Tensor,
    mask: torch.Tensor,
    bin_count: int | None = 16,
    bin_width: float | None = None,
) -> tuple[torch.Tensor, int]:
    """(B, N) values, (B, N) bool mask -> (B, N) grey levels 1..Ng (0 outside), and Ng.

    Fixed bin count reproduces ``numpy.histogram``'s edges (a flat region is widened by 0.5 on
    each side, as numpy does) with the top edge raised by 1, then ``numpy.digitize``; fixed bin
    width counts bins from 0. ``Ng`` is ``bin_count``, or the most levels of any image.
    """
    v = values.double()
    big = torch.finfo(torch.float64).max
    lo = torch.where(mask, v, big).amin(1, keepdim=True)
    hi = torch.where(mask, v, -big).amax(1, keepdim=True)
    empty = ~mask.any(1, keepdim=True)
    lo, hi = torch.where(empty, 0.0, lo), torch.where(empty, 0.0, hi)
    if bin_width is None:
        if bin_count is None or bin_count < 1:
            raise ValueError("pass bin_count >= 1 or bin_width > 0")
        flat = hi == lo
        lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
        step = (hi - lo) / bin_count
        edges = torch.arange(bin_count + 1, dtype=torch.float64, device=v.device) * step + lo
        edges[:, -1:] = hi + 1  # numpy.linspace ends exactly on stop; PyRadiomics adds 1
        # The bin from the step, then moved by one where rounding put it beside numpy's edge.
        guess = ((v - lo) / step).floor().clamp(0, bin_count - 1).long()
        below = edges.gather(1, guess)
        above = edges.gather(1, guess + 1)
        levels = guess + 1 - (v < below).long() + (v >= above).long()
        levels = levels.clamp(1, bin_count)
        n_levels = bin_count
    else:
        if bin_width <= 0:
            raise ValueError("bin_width must be > 0")
        levels = torch.floor(v / bin_width) - torch.floor(lo / bin_width) + 1
        levels = levels.long()
        n_levels = int(torch.where(mask, levels, 0).max().clamp_min(1))
    return torch.where(mask, levels, 0), n_levels


def _percentile(sorted_values: torch.Tensor, count: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation percentile (numpy's default) of each row's first ``count`` values."""
    pos = (count.double() - 1).clamp_min(0) * (q / 100.0)
    below = pos.floor().long()
    above = pos.ceil().long()
    a = sorted_values.gather(1, below[:, None])[:, 0]
    b = sorted_values.gather(1, above[:, None])[:, 0]
    return a + (b - a) * (pos - below)


def first_order(
    values: torch.Tensor, mask: torch.Tensor, levels: torch.Tensor, n_levels: int
) -> dict[str, torch.Tensor]:
    """First-order features of (B, N) ``values`` where ``mask``; ``levels`` their grey levels."""
    v = values.double()
    w = mask.double()
    n = w.sum(1)
    safe_n = n.clamp_min(1)
    mean = (v * w).sum(1) / safe_n
    d = (v - mean[:, None]) * w
    m2, m3, m4 = ((d**k).sum(1) / safe_n for k in (2, 3, 4))
    flat = m2 == 0
    m2_safe = torch.where(flat, 1.0, m2)
    energy = (v * v * w).sum(1)
    hist = torch.zeros(v.shape[0], n_levels + 1, dtype=torch.float64, device=v.device)
    hist.scatter_add_(1, levels, w)
    p = hist[:, 1:] / safe_n[:, None]
    # Sorted in the values' own dtype (the order is exact; the interpolation is in float64).
    ordered = torch.where(mask, values, torch.inf).sort(1).values.double()
    count = n.long()
    pct = {q: _percentile(ordered, count, q) for q in (0, 10, 25, 50, 75, 90, 100)}
    return {
        "mean": mean,
        "variance": m2,
        "skewness": torch.where(flat, 0.0, m3 / m2_safe**1.5),
        "kurtosis": torch.where(flat, 0.0, m4 / m2_safe**2),
        "energy": energy,
        "rms": torch.sqrt(energy / safe_n),
        "entropy": -(p * torch.log2(p + _EPS)).sum(1),
        "uniformity": (p * p).sum(1),
        "minimum": pct[0],
        "p10": pct[10],
        "median": pct[50],
        "p90": pct[90],
        "maximum": pct[100],
        "iqr": pct[75] - pct[25],
        "mad": (d.abs()).sum(1) / safe_n,
    }


def glcm_matrices(levels: torch.Tensor, n_levels: int) -> torch.Tensor:
    """(B, H, W) grey levels (0 outside the region) -> (B, 4, Ng, Ng) symmetric pair counts.

    Only the region's pixels are visited: each looks up its neighbour in each direction in the
    zero-padded image, and one ``bincount`` counts every (image, direction, i, j) at once.
    """
    b, h, w = levels.shape
    padded = F.pad(levels, (1, 1, 1, 1)).reshape(-1)  # level 0 outside the image too
    where = torch.nonzero(padded, as_tuple=True)[0]
    centre = padded[where] - 1
    image = where // ((h + 2) * (w + 2))
    index = []
    for a, (dy, dx) in enumerate(DIRECTIONS):
        other = padded[where + dy * (w + 2) + dx] - 1
        keep = other >= 0
        index.append((((image * 4 + a) * n_levels + centre) * n_levels + other)[keep])
    counts = torch.bincount(torch.cat(index), minlength=b * 4 * n_levels * n_levels)
    p = counts.view(b, 4, n_levels, n_levels).double()
    return p + p.transpose(-1, -2)


def glcm_features(levels: torch.Tensor, n_levels: int) -> dict[str, torch.Tensor]:
    """GLCM features of (B, H, W) grey levels, averaged over the directions with pairs."""
    p = glcm_matrices(levels, n_levels)
    total = p.sum((-1, -2))
    has = total > 0
    p = p / total.clamp_min(1)[..., None, None]
    g = torch.arange(1, n_levels + 1, dtype=torch.float64, device=p.device)
    i, j = g[:, None], g[None, :]
    diff = (i - j).abs()
    px, py = p.sum(-1), p.sum(-2)  # (B, 4, Ng) marginals
    ux, uy = (px * g).sum(-1), (py * g).sum(-1)
    sx = (px * (g - ux[..., None]) ** 2).sum(-1).sqrt()
    sy = (py * (g - uy[..., None]) ** 2).sum(-1).sqrt()
    cov = (p * (i - ux[..., None, None]) * (j - uy[..., None, None])).sum((-1, -2))
    corr = torch.where(sx * sy == 0, 1.0, cov / (sx * sy + _EPS))
    per_direction = {
        "glcm_contrast": (p * diff**2).sum((-1, -2)),
        "glcm_correlation": corr,
        "glcm_joint_energy": (p * p).sum((-1, -2)),
        "glcm_idm": (p / (1 + diff**2)).sum((-1, -2)),
        "glcm_id": (p / (1 + diff)).sum((-1, -2)),
    }
    weight = has.double()
    directions = weight.sum(1).clamp_min(1)
    return {k: (v * weight).sum(1) / directions for k, v in per_direction.items()}


def shape_features(mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Shape features of (B, H, W) bool masks (pixel spacing 1)."""
    m = mask.double()
    padded = F.pad(m, (1, 1, 1, 1))
    code = (
        padded[:, :-1, :-1]
        + 2 * padded[:, :-1, 1:]
        + 4 * padded[:, 1:, 1:]
        + 8 * padded[:, 1:, :-1]
    ).long()
    perimeter_lut = torch.tensor(_PERIMETER, dtype=torch.float64, device=m.device)
    area_lut = torch.tensor(_AREA, dtype=torch.float64, device=m.device)
    area = m.sum((1, 2))
    n = area.clamp_min(1)
    ys = torch.arange(m.shape[1], dtype=torch.float64, device=m.device)[None, :, None]
    xs = torch.arange(m.shape[2], dtype=torch.float64, device=m.device)[None, None, :]
    my, mx = (m * ys).sum((1, 2)) / n, (m * xs).sum((1, 2)) / n
    dy, dx = (ys - my[:, None, None]) * m, (xs - mx[:, None, None]) * m
    cyy, cxx = (dy * dy).sum((1, 2)) / n, (dx * dx).sum((1, 2)) / n
    cxy = (dx * dy).sum((1, 2)) / n
    half_trace = (cyy + cxx) / 2
    root = torch.sqrt(((cyy - cxx) / 2) ** 2 + cxy**2)
    lam_max = half_trace + root
    lam_min = (half_trace - root).clamp_min(0)
    ratio = torch.where(lam_max > 0, lam_min / lam_max.clamp_min(_EPS), 0.0)
    return {
        "area": area,
        "mesh_area": area_lut[code].sum((1, 2)),
        "perimeter": perimeter_lut[code].sum((1, 2)),
        "major_axis": 4 * lam_max.sqrt(),
        "minor_axis": 4 * lam_min.sqrt(),
        "elongation": ratio.sqrt(),
        "eccentricity": torch.where(lam_max > 0, (1 - ratio).clamp_min(0).sqrt(), 0.0),
    }


def radiomic_features(
    images: torch.Tensor,
    masks: torch.Tensor,
    bin_count: int | None = 16,
    bin_width: float | None = None,
) -> dict[str, torch.Tensor]:
    """Feature name -> (B,) float64 values of each image's masked region (see module docs).

    ``images`` (B, H, W) or (B, 1, H, W); ``masks`` the same shape, nonzero inside the region.
    ``bin_width`` (if given) replaces ``bin_count``.
    """
    if images.dim() == 4:
        images, masks = images[:, 0], masks[:, 0]
    if images.shape != masks.shape or images.dim() != 3:
        raise ValueError(f"images {tuple(images.shape)} and masks {tuple(masks.shape)} differ")
    with torch.no_grad():
        region = masks != 0
        b, h, w = images.shape
        flat_values, flat_mask = images.reshape(b, -1), region.reshape(b, -1)
        levels, n_levels = discretize(flat_values, flat_mask, bin_count, bin_width)
        out = first_order(flat_values, flat_mask, levels, n_levels)
        out |= glcm_features(levels.view(b, h, w), n_levels)
        out |= shape_features(region)
        empty = ~flat_mask.any(1)
        return {k: torch.where(empty, 0.0, out[k]) for k in FEATURES}


def feature_matrix(
    images: torch.Tensor,
    masks: torch.Tensor,
    bin_count: int | None = 16,
    bin_width: float | None = None,
) -> torch.Tensor:
    """(B, len(FEATURES)) float32 features in ``FEATURES`` order (for a network's input)."""
    feats = radiomic_features(images, masks, bin_count, bin_width)
    return torch.stack([feats[k] for k in FEATURES], 1).float()
