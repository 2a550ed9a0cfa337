"""The temperature of a multi-class run (``RUN/calibration.json``), fitted after training.

A network trained on a few hundred labels is over-confident; one temperature fitted on the
validation part (Guo et al. 2017) makes its probabilities mean what they say without changing
a single prediction. A run without the file (older runs) keeps temperature 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from multimix.metrics.calibration import expected_calibration_error, fit_temperature
from multimix.models.inference import run_model

CALIBRATION_FILE = "calibration.json"
MIN_IMAGES = 20  # fewer labeled validation images than this: a temperature would be noise


def write_temperature(run: Path, model, bank, rows: torch.Tensor, device) -> float:
    """Fit on the labeled ``rows`` of ``bank``; write the file with the NLL and ECE it changed."""
    if rows is None or not len(rows):
        return 1.0  # nothing to fit on, nothing written
    labeled = rows[bank.labeled[rows]]
    if len(labeled) < MIN_IMAGES:
        note = f"fewer than {MIN_IMAGES} labeled validation images: not fitted"
        info = {"temperature": 1.0, "fitted_on": None, "n_images": len(labeled), "note": note}
        (Path(run) / CALIBRATION_FILE).write_text(json.dumps(info, indent=1))
        return 1.0
    logits = run_model(model, bank.images[labeled], device, lambda z: z.float()).probs
    targets = bank.targets[labeled].long()
    t = fit_temperature(logits, targets)

    def scores(temp: float) -> dict:
        probs = torch.softmax(logits / temp, dim=1)
        nll = float(torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), targets))
        ece = expected_calibration_error(probs.numpy(), targets.numpy())["ece"]
        return {"nll": nll, "ece": ece}

    info = {
        "temperature": t,
        "fitted_on": "validation",
        "n_images": len(labeled),
        "before": scores(1.0),
        "after": scores(t),
    }
    (Path(run) / CALIBRATION_FILE).write_text(json.dumps(info, indent=1))
    return t


def read_temperature(run: Path) -> float:
    path = Path(run) / CALIBRATION_FILE
    return float(json.loads(path.read_text())["temperature"]) if path.exists() else 1.0
