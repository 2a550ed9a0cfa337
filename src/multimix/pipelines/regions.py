"""``predict``'s outputs for a method that judges each image on a region of it (``kacl``).

A method says which region it used and what it read there (:meth:`Method.regions
<multimix.methods.base.Method.regions>`); this writes, per image, ``regions/<name>.png`` (the
radiograph with the region's outline, at the image's own size) and the CSV cells
``<region>_area_fraction, <region>_path, <region>_<value>...``. A method without regions adds
nothing, so ``predict`` asks every run the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_erosion

from multimix.core.errors import ConfigError
from multimix.data.io import write_png
from multimix.methods.base import Method, Regions

REGION_RGB = (0, 200, 255)  # not the mask overlay's green, so the two are told apart
FOLDER = "regions"


class RegionOutput:
    """Collects a method's regions batch by batch; the header follows the first batch."""

    def __init__(self, method: Method | None) -> None:
        self.method = method
        self.names: list[str] = []
        self.prefix = ""
        self.captions: set[str] = set()

    @classmethod
    def of_run(cls, cfg, task) -> RegionOutput:
        """The run's method (its saved options) behind a writer for its regions; a run whose
        method is no longer registered predicts as before, without them."""
        try:
            return cls(cfg.make_method(task))
        except ConfigError:
            return cls(None)

    def batch(self, model: torch.nn.Module, x: torch.Tensor) -> Regions | None:
        found = self.method.regions(model, x) if self.method is not None else None
        if found is not None and not self.names:
            self.names, self.prefix = list(found.values[0]) if found.values else [], found.name
        if found is not None:
            self.captions.add(found.caption)
        return found

    def header(self) -> list[str]:
        if not self.prefix:
            return []
        p = self.prefix
        return [f"{p}_area_fraction", f"{p}_path", *(f"{p}_{n}" for n in self.names)]

    def write(self, out: Path, name: str, image: np.ndarray, found: Regions, i: int) -> list[str]:
        """Write image ``i``'s region overlay; its CSV cells back."""
        mask = region_at(found.masks[i], image.shape)
        rel = f"{FOLDER}/{name}.png"
        (out / FOLDER).mkdir(parents=True, exist_ok=True)
        write_png(out / rel, outlined(image, mask))
        values = found.values[i]
        return [f"{float(mask.mean()):.6f}", rel, *(f"{values[n]:.6g}" for n in self.names)]


def region_at(mask: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """A (S, S) bool region at the network's size -> bool at ``shape`` (nearest)."""
    up = F.interpolate(mask[None, None].float(), size=shape, mode="nearest")[0, 0]
    return up.numpy() >= 0.5


def outlined(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The gray radiograph (float [0, 1] or uint8) with ``mask``'s outline in colour: RGB."""
    gray = image if image.dtype == np.uint8 else np.rint(np.clip(image, 0, 1) * 255)
    rgb = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
    thickness = max(1, round(max(mask.shape) / 256))
    rgb[mask & ~binary_erosion(mask, iterations=thickness)] = REGION_RGB
    return rgb
