"""The calibration of a multi-class run (``RUN/calibration.json``), fitted after training.

A network trained on a few hundred labels is over-confident, and the checkpoint kept for its
AUC may put its decision in the wrong place: it ranks the validation images well yet calls
most normals pneumonia. A temperature and one bias per class, fitted on the validation part
(bias-corrected temperature scaling: ``metrics.calibration.fit_calibration``), make the
probabilities mean what they say and put the decision where the validation labels do. The bias
is fitted only where the validation part holds enough images of every class to place it; a run
without the file (older runs) keeps temperature 1 and no bias.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from multimix.metrics.calibration import expected_calibration_error, fit_calibration
from multimix.models.inference import run_model

CALIBRATION_FILE = "calibration.json"
MIN_IMAGES = 20  # fewer labeled validation images than this: a temperature would be noise
MIN_PER_CLASS = 10  # fewer images of some class than this: a bias would be noise


def write_calibration(run: Path, model, bank, rows: torch.Tensor, device) -> float:
    """Fit on the labeled ``rows`` of ``bank``; write the file with the NLL, ECE and accuracy
    it changed. Returns the temperature."""
    if rows is None or not len(rows):
        return 1.0  # nothing to fit on, nothing written
    labeled = rows[bank.labeled[rows]]
    if len(labeled) < MIN_IMAGES:
        note = f"fewer than {MIN_IMAGES} labeled validation images: not fitted"
        info = {"temperature": 1.0, "fitted_on": None, "n_images": len(labeled), "note": note}
        (Path(run) / CALIBRATION_FILE).write_text(json.dumps(info, indent=1))
        return 1.0
    logits = run_model(model, bank.images[labeled], device, lambda z: z.float(), masks=False).probs
    targets = bank.targets[labeled].long()
    counts = torch.bincount(targets, minlength=logits.shape[1])
    with_bias = bool((counts >= MIN_PER_CLASS).all())
    t, bias = fit_calibration(logits, targets, with_bias=with_bias)

    def scores(temp: float, shift: list[float]) -> dict:
        probs = torch.softmax(logits / temp + torch.tensor(shift), dim=1)
        nll = float(torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), targets))
        ece = expected_calibration_error(probs.numpy(), targets.numpy())["ece"]
        accuracy = float((probs.argmax(1) == targets).float().mean())
        return {"nll": nll, "ece": ece, "accuracy": accuracy}

    info = {
        "temperature": t,
        "bias": bias,
        "fitted_on": "validation",
        "n_images": len(labeled),
        "before": scores(1.0, [0.0] * len(bias)),
        "after": scores(t, bias),
    }
    if not with_bias:
        info["note"] = f"fewer than {MIN_PER_CLASS} validation images of some class: no bias"
    (Path(run) / CALIBRATION_FILE).write_text(json.dumps(info, indent=1))
    return t


def read_calibration(run: Path) -> tuple[float, list[float] | None]:
    """The run's temperature and class biases (None: no bias)."""
    path = Path(run) / CALIBRATION_FILE
    if not path.exists():
        return 1.0, None
    info = json.loads(path.read_text())
    return float(info["temperature"]), info.get("bias")
