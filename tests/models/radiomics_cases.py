"""The images and regions the torch radiomics are checked on against PyRadiomics.

Phantom cases are regenerated from seeds (``multimix.data.phantom``), so the reference values in
``tests/fixtures/radiomics/reference.json`` (written by ``benchmarks/radiomics_check.py`` with
PyRadiomics) can be checked without PyRadiomics installed. Real cases are radiographs of
``covid_ieee8023`` with their lung masks, used when the shared data are present.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image

from multimix.data.phantom import make_phantom

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL_SOURCE = SHARED_DATA / "covid_ieee8023"
SETTINGS = {"count16": {"bin_count": 16}, "width25": {"bin_width": 25.0}}
N_PHANTOMS = 8
N_REAL = 8


def phantom_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, uint8 image, bool mask): lungs, heart, a bright irregular region with holes, a
    blob and a lone pixel beside a bar (disconnected, saddle points), on 64 px phantoms."""
    out = []
    for i in range(N_PHANTOMS):
        rng = np.random.default_rng(np.random.SeedSequence(2024, spawn_key=(i,)))
        ph = make_phantom(rng, size=64, pneumonia=i % 2 == 1, style=("adult", "pediatric")[i % 2])
        kind = ("lungs", "heart", "bright", "odd")[i % 4]
        if kind == "bright":
            lungs = ph.masks["lungs"]
            mask = lungs & (ph.image > np.median(ph.image[lungs]))
        elif kind == "odd":
            mask = np.zeros_like(ph.masks["lungs"])
            yy, xx = np.mgrid[:64, :64]
            mask |= (yy - 30) ** 2 / 90 + (xx - 22) ** 2 / 40 <= 1
            mask[40:44, 30:58] = True
            mask[20, 50] = True
            mask[21, 51] = True  # touches the pixel above diagonally only: a saddle square
        else:
            mask = ph.masks[kind]
        out.append((f"phantom{i}-{kind}", ph.image, mask.astype(bool)))
    return out


def real_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first ``N_REAL`` covid_ieee8023 images (by name) that have a lung mask, or []."""
    masks = sorted((REAL_SOURCE / "masks").glob("*.png")) if REAL_SOURCE.is_dir() else []
    out = []
    for path in masks[:N_REAL]:
        image = np.asarray(Image.open(REAL_SOURCE / "images" / path.name).convert("L"))
        mask = np.asarray(Image.open(path).convert("L")) > 127
        out.append((f"covid-{path.stem}", image, mask))
    return out


# Our name -> (PyRadiomics feature class, its feature name).
PYRADIOMICS_NAMES = {
    "mean": ("firstorder", "Mean"),
    "variance": ("firstorder", "Variance"),
    "skewness": ("firstorder", "Skewness"),
    "kurtosis": ("firstorder", "Kurtosis"),
    "energy": ("firstorder", "Energy"),
    "rms": ("firstorder", "RootMeanSquared"),
    "entropy": ("firstorder", "Entropy"),
    "uniformity": ("firstorder", "Uniformity"),
    "minimum": ("firstorder", "Minimum"),
    "p10": ("firstorder", "10Percentile"),
    "median": ("firstorder", "Median"),
    "p90": ("firstorder", "90Percentile"),
    "maximum": ("firstorder", "Maximum"),
    "iqr": ("firstorder", "InterquartileRange"),
    "mad": ("firstorder", "MeanAbsoluteDeviation"),
    "glcm_contrast": ("glcm", "Contrast"),
    "glcm_correlation": ("glcm", "Correlation"),
    "glcm_joint_energy": ("glcm", "JointEnergy"),
    "glcm_idm": ("glcm", "Idm"),
    "glcm_id": ("glcm", "Id"),
    "area": ("shape2D", "PixelSurface"),
    "mesh_area": ("shape2D", "MeshSurface"),
    "perimeter": ("shape2D", "Perimeter"),
    "major_axis": ("shape2D", "MajorAxisLength"),
    "minor_axis": ("shape2D", "MinorAxisLength"),
    "elongation": ("shape2D", "Elongation"),
}


def pyradiomics_features(image: np.ndarray, mask: np.ndarray, setting: dict) -> dict[str, float]:
    """PyRadiomics' values of our features (eccentricity from its Elongation)."""
    import SimpleITK as sitk
    from radiomics import firstorder, glcm, shape2D

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    kwargs = {"force2D": True}
    if "bin_count" in setting:
        kwargs["binCount"] = setting["bin_count"]
    else:
        kwargs["binWidth"] = setting["bin_width"]
    si = sitk.GetImageFromArray(image.astype(np.float64)[None])
    sm = sitk.GetImageFromArray(mask.astype(np.uint8)[None])
    values = {}
    classes = {
        "firstorder": firstorder.RadiomicsFirstOrder,
        "glcm": glcm.RadiomicsGLCM,
        "shape2D": shape2D.RadiomicsShape2D,
    }
    for group, cls in classes.items():
        extractor = cls(si, sm, **kwargs)
        extractor.disableAllFeatures()
        for _ours, (g, theirs) in PYRADIOMICS_NAMES.items():
            if g == group:
                extractor.enableFeatureByName(theirs)
        result = extractor.execute()
        for ours, (g, theirs) in PYRADIOMICS_NAMES.items():
            if g == group:
                values[ours] = float(result[theirs])
    values["eccentricity"] = math.sqrt(max(0.0, 1.0 - values["elongation"] ** 2))
    return values
