"""One label per image among two or more classes (softmax)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from multimix.data.labels import LabelSpace
from multimix.methods.losses import pseudo_label_loss
from multimix.tasks.base import TASKS, BatchOutput, ErrorGroup, PredictionOutput, Task


@TASKS.register()
class MultiClass(Task):
    name = "multiclass"
    description = "one class per image (softmax), e.g. normal / pneumonia"
    family = "multiclass"

    # -- training side ----------------------------------------------------------------------
    def make_space(self) -> LabelSpace:
        return LabelSpace(self.classes, self.label_map)

    def supervised_loss(
        self, logits: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        ce = F.cross_entropy(logits, targets)
        acc = (logits.argmax(1) == targets).float().mean().item()
        return ce, {"loss_cls": ce.item(), "train_acc": acc}

    def pseudo_label_loss(
        self, weak: torch.Tensor, strong: torch.Tensor, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return pseudo_label_loss(weak, strong, threshold)

    # -- evaluation and prediction side -----------------------------------------------------
    metric_key = "classification"

    temperature: float = 1.0  # fitted on validation after training (RUN/calibration.json)
    bias: list[float] | None = None  # per-class logit bias, fitted with it (None: none)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes of the calibrated logits: over the run's temperature,
        plus its class biases."""
        z = logits.float() / self.temperature
        if self.bias is not None:
            z = z + torch.tensor(self.bias, dtype=z.dtype, device=z.device)
        return torch.softmax(z, dim=1)

    def after_training(self, run, model, bank, val_rows, device) -> None:
        """Fit temperature and biases on the labeled validation rows; ``RUN/calibration.json``."""
        from multimix.tasks.temperature import write_calibration

        write_calibration(Path(run), model, bank, val_rows, device)

    def attach(self, run) -> None:
        from multimix.tasks.temperature import read_calibration

        self.temperature, self.bias = read_calibration(Path(run))

    def metric_block(self, bank, rows, preds) -> dict | None:
        """Accuracy, AUC, F1 per class, and the calibration (ECE and reliability bins)."""
        from multimix.metrics import classification_metrics
        from multimix.metrics.calibration import expected_calibration_error

        labeled = bank.labeled[rows]
        if not labeled.any():
            return None
        probs, targets = preds.probs[labeled].numpy(), bank.targets[rows][labeled].numpy()
        cls = classification_metrics(probs, targets, self.classes)
        calibration = expected_calibration_error(probs, targets)
        cls["ece"] = calibration.pop("ece")
        cls["calibration"] = calibration  # per confidence bin, for the reliability diagram
        return cls

    def summary(self, block: dict) -> dict:
        return {k: block.get(k) for k in ("accuracy", "auc", "f1_macro")}

    def score_parts(self, block: dict) -> list[float]:
        """The AUC (two classes), else the accuracy."""
        value = block["auc"] if block["auc"] is not None else block["accuracy"]
        return [value] if value is not None else []

    def prediction_output(self, run, model, structures) -> PredictionOutput:
        return _ClassOutput(self.classes)

    def describe(self, probs: torch.Tensor) -> str:
        top = int(probs.argmax())
        return f"{self.classes[top]} {float(probs[top]):.2f}"

    def error_groups(self, bank, preds, n: int) -> list[ErrorGroup]:
        """False positives and false negatives (positive = ``classes[1]``) for two classes,
        else the misclassified images; most confident first."""
        labels, labeled = bank.targets, bank.labeled
        if not labeled.any() or not len(preds.probs):
            return []
        confidence, pred = preds.probs.max(dim=1)
        if len(self.classes) == 2:
            neg, pos = self.classes
            is_neg, is_pos = labeled & (labels == 0), labeled & (labels == 1)
            groups = [
                ("False positives", f"{neg} images predicted {pos}", is_neg & (pred == 1)),
                ("False negatives", f"{pos} images predicted {neg}", is_pos & (pred == 0)),
            ]
        else:
            wrong = labeled & (pred != labels)
            groups = [("Misclassified", "images predicted the wrong class", wrong)]
        out = []
        for heading, what, chosen in groups:
            rows = torch.nonzero(chosen).flatten()
            rows = rows[torch.argsort(confidence[rows], descending=True, stable=True)][:n]
            titles = [
                f"{bank.records[i].name[:24]}  {self.describe(preds.probs[i])}  "
                f"(true {self.classes[int(bank.targets[i])]})"
                for i in rows.tolist()
            ]
            out.append(
                ErrorGroup(heading, f"{what.capitalize()}, most confident first.", rows, titles)
            )
        return out

    def roc_inputs(self, bank) -> dict:
        labeled = bank.labeled
        return {"labels": bank.targets[labeled].numpy() if labeled.any() else None, "codes": None}


class _ClassOutput(PredictionOutput):
    """``predicted_class, p_<class>...``; the overlay names the class and its probability."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes, self.notes = classes, []

    def header(self) -> list[str]:
        return ["predicted_class", *(f"p_{c}" for c in self.classes)]

    def batch(self, probs, outputs, mask_probs) -> BatchOutput:
        cells, captions = [], []
        for p in probs:
            k = int(p.argmax())
            captions.append(f"{self.classes[k]} {float(p[k]):.2f}")
            cells.append([self.classes[k], *(f"{float(v):.6f}" for v in p)])
        pairs: list[tuple[int, int | None]] = [(i, None) for i in range(len(probs))]
        predicted = [[row[0]] for row in cells]
        return BatchOutput(cells, captions, [[] for _ in cells], pairs, predicted)
