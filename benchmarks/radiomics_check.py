"""PyRadiomics reference values for the torch radiomics, and the speed of each.

    .venv/bin/python benchmarks/radiomics_check.py

Needs an environment with PyRadiomics (``pip install pyradiomics-bhklab``; plain
``pyradiomics`` does not build on Python 3.11) besides the project's packages. Writes
``tests/fixtures/radiomics/reference.json`` (PyRadiomics' values on the cases of
``tests/models/radiomics_cases.py``, for both binning settings) and
``benchmarks/results/radiomics_speed.json`` (images per second of each implementation on the
same regions: PyRadiomics one image at a time, torch one batch).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.models.radiomics_cases import (  # noqa: E402
    SETTINGS,
    phantom_cases,
    pyradiomics_features,
    real_cases,
)

from multimix.models.radiomics import FEATURES, radiomic_features  # noqa: E402


def torch_features(cases, setting: dict) -> list[dict[str, float]]:
    images = torch.from_numpy(np.stack([c[1] for c in cases]).astype(np.float32))
    masks = torch.from_numpy(np.stack([c[2] for c in cases]))
    feats = radiomic_features(images, masks, **_torch_kwargs(setting))
    return [{k: float(feats[k][i]) for k in FEATURES} for i in range(len(cases))]


def _torch_kwargs(setting: dict) -> dict:
    if "bin_width" in setting:
        return {"bin_count": None, "bin_width": setting["bin_width"]}
    return {"bin_count": setting["bin_count"]}


def speed(cases, setting: dict, repeats: int) -> dict[str, float]:
    """Images per CPU second of this process (fair on shared cores): PyRadiomics per image,
    torch on the whole batch, both on one thread."""
    start = time.process_time()
    for _ in range(repeats):
        for _, image, mask in cases:
            pyradiomics_features(image, mask, setting)
    py = repeats * len(cases) / (time.process_time() - start)
    images = torch.from_numpy(np.stack([c[1] for c in cases]).astype(np.float32))
    masks = torch.from_numpy(np.stack([c[2] for c in cases]))
    radiomic_features(images, masks, **_torch_kwargs(setting))  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        radiomic_features(images, masks, **_torch_kwargs(setting))
    tt = repeats * len(cases) / (time.process_time() - start)
    return {"pyradiomics_images_per_s": round(py, 1), "torch_images_per_s": round(tt, 1)}


def _version() -> str:
    from importlib.metadata import version

    return f"pyradiomics-bhklab {version('pyradiomics-bhklab')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixture", type=Path, default=ROOT / "tests/fixtures/radiomics")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # PyRadiomics runs on one thread too
    groups = {"phantom": phantom_cases(), "real": real_cases()}
    reference = {"pyradiomics": _version(), "settings": SETTINGS, "cases": {}}
    worst: dict[str, float] = {}
    for group, cases in groups.items():
        for sname, setting in SETTINGS.items():
            ours = torch_features(cases, setting) if cases else []
            for (name, image, mask), mine in zip(cases, ours, strict=True):
                theirs = pyradiomics_features(image, mask, setting)
                reference["cases"].setdefault(group, {}).setdefault(name, {})[sname] = theirs
                for k, v in theirs.items():
                    rel = abs(mine[k] - v) / max(abs(v), 1e-12)
                    worst[k] = max(worst.get(k, 0.0), rel if abs(v) > 1e-9 else abs(mine[k]))
    args.fixture.mkdir(parents=True, exist_ok=True)
    (args.fixture / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print("largest relative difference per feature:")
    for k in FEATURES:
        print(f"  {k:18s} {worst.get(k, float('nan')):.2e}")

    # Speed on 128 px regions: the real radiographs downsized as the training pipeline does.
    from PIL import Image

    sized = []
    for name, image, mask in groups["real"] or groups["phantom"]:
        im = np.asarray(Image.fromarray(image).resize((128, 128), Image.BILINEAR))
        mk = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((128, 128))) > 127
        sized.append((name, im, mk))
    batch = sized * max(1, 64 // len(sized))
    speeds = {s: speed(batch, setting, args.repeats) for s, setting in SETTINGS.items()}
    record = {
        "what": "radiomic features (first order, GLCM, shape) of one lung region per image",
        "images": f"{len(batch)} covid_ieee8023 radiographs at 128 px with their lung masks",
        "torch_threads": torch.get_num_threads(),
        "clock": "process CPU time",
        "largest_relative_difference": max(worst.values()) if worst else None,
        "machine": platform.processor() or platform.machine(),
        "pyradiomics": _version(),
        "speed": speeds,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "radiomics_speed.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
