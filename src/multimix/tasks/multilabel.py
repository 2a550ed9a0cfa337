"""Many findings per image, each its own sigmoid, from noisy and partly uncertain labels."""

from __future__ import annotations

from pathlib import Path

import torch

from multimix.data.findings import NEGATIVE, POSITIVE
from multimix.tasks.base import TASKS, ErrorGroup, PredictionOutput, Task


@TASKS.register()
class MultiLabel(Task):
    name = "multilabel"
    description = "findings per image (one sigmoid each), optional segmentation/localization"

    # -- training side ----------------------------------------------------------------------

    # -- evaluation and prediction side -----------------------------------------------------
    # Only certain labels are scored: an uncertain or unmentioned finding says nothing about
    # whether the prediction was right. A finding is present at or above its threshold
    # (RUN/thresholds.json, chosen on validation after training; see tasks.thresholds).
    metric_key = "multilabel"
    explains_class_in_error = True  # each error is one (image, finding), explained for it

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """One sigmoid per finding."""
        return torch.sigmoid(logits.float())

    def keeps_activation_maps(self, model) -> bool:
        """Always: localization is scored from the maps (the head's, else the CAM)."""
        return True

    def metric_block(self, bank, rows, preds, thresholds=None) -> dict | None:
        """Per-finding AUC and precision/recall/F1 at ``thresholds`` (default 0.5)."""
        from multimix.metrics.findings import finding_metrics

        labeled = bank.labeled[rows]
        if not labeled.any():
            return None
        codes = bank.targets[rows][labeled].numpy()
        return finding_metrics(preds.probs[labeled].numpy(), codes, self.classes, thresholds)

    def summary(self, block: dict) -> dict:
        """Mean AUC and macro F1 over findings."""
        return {"accuracy": None, "auc": block["mean_auc"], "f1_macro": block["f1_macro"]}

    def score_parts(self, block: dict) -> list[float]:
        """The mean AUC over findings."""
        return [block["mean_auc"]] if block.get("mean_auc") is not None else []

    def extra_metrics(self, run, model, bank, preds, space, device) -> dict:
        """The block at the run's thresholds (chosen now if missing) and ``localization``
        where the source has boxes for the task's findings."""
        from multimix.data.multilabel import bank_boxes, bank_roots
        from multimix.tasks import thresholds as th
        from multimix.tasks.localization import localization_block

        def choose() -> dict[str, float]:
            val = th.validation_bank(Path(run), bank.images.shape[-1], self._space())
            rows = torch.arange(len(val)) if val is not None else torch.zeros(0, dtype=torch.long)
            return self.choose_thresholds(run, model, val, rows, torch.device(device))

        thresholds = th.run_thresholds(Path(run), choose)
        out = {}
        block = self.metric_block(bank, torch.arange(len(bank)), preds, thresholds)
        if block is not None:
            out[self.metric_key] = block
        share = self.option("zone_min_share", 0.1)
        boxes = bank_boxes(bank, bank_roots(bank), space)
        loc = localization_block(model, bank, preds, boxes, share)
        if loc is not None:
            out["localization"] = loc
        return out

    def after_training(self, run, model, bank, val_rows, device) -> None:
        """Choose the per-finding thresholds on the validation rows; ``RUN/thresholds.json``."""
        self.choose_thresholds(run, model, bank, val_rows, device)

    def choose_thresholds(self, run, model, bank, rows, device) -> dict[str, float]:
        """F1-best thresholds of ``model`` on the labeled ``rows``, written to the run."""
        from multimix.models.inference import run_model
        from multimix.tasks.thresholds import write_thresholds

        def probabilities(bank, rows: torch.Tensor) -> torch.Tensor:
            return run_model(model, bank.images[rows], device, self.probabilities).probs

        return write_thresholds(Path(run), bank, rows, self.classes, probabilities)

    def _space(self):
        from multimix.data.findings import FindingSpace

        return FindingSpace(self.classes, self.label_map)

    def read_thresholds(self, run) -> tuple[dict[str, float], str | None]:
        """The run's thresholds (0.5 where missing) and a note saying which fell back."""
        from multimix.tasks.thresholds import read_thresholds

        return read_thresholds(Path(run), list(self.classes))

    def prediction_output(self, run, model, structures) -> PredictionOutput:
        from multimix.tasks.findings_output import FindingsOutput

        thresholds, note = self.read_thresholds(run)
        notes = [note] if note else []
        return FindingsOutput(model, list(self.classes), thresholds, structures, notes)

    def prepare_report(self, run) -> list[str]:
        """Reads the thresholds the captions and error galleries use."""
        self.thresholds, note = self.read_thresholds(run)
        return [
            "Multi-label run: the summary's AUC and F1 are the mean AUC and macro F1 over "
            "findings; captions list the findings at or above their thresholds.",
            *([note] if note else []),
        ]

    def describe(self, probs: torch.Tensor) -> str:
        return findings_text(probs, list(self.classes), getattr(self, "thresholds", {}))

    def error_groups(self, bank, preds, n: int) -> list[ErrorGroup]:
        """False positives and negatives over (image, finding) pairs, each for its finding."""
        findings, thresholds = list(self.classes), getattr(self, "thresholds", {})
        out = []
        for heading, what, rows, cols in finding_errors(bank, preds, findings, thresholds, n):
            titles = [
                f"{bank.records[r].name[:24]}  {findings[f]} {float(preds.probs[r, f]):.2f} "
                f"(threshold {thresholds.get(findings[f], 0.5):.2f})"
                for r, f in zip(rows.tolist(), cols.tolist(), strict=True)
            ]
            out.append(ErrorGroup(heading, what, rows, titles, cols, "the finding named"))
        return out

    def roc_inputs(self, bank) -> dict:
        """One ROC per finding, from the codes of the labeled images."""
        labeled = bank.labeled
        return {"labels": None, "codes": bank.targets[labeled].numpy() if labeled.any() else None}


def findings_text(probs: torch.Tensor, findings: list[str], thresholds: dict[str, float]) -> str:
    """``effusion 0.83, nodule 0.71`` (findings present, most probable first) or
    ``no finding (top: nodule 0.31)``."""
    order = torch.argsort(probs, descending=True, stable=True).tolist()
    present = [f for f in order if float(probs[f]) >= thresholds.get(findings[f], 0.5)]
    if not present:
        top = order[0]
        return f"no finding (top: {findings[top]} {float(probs[top]):.2f})"
    return ", ".join(f"{findings[f]} {float(probs[f]):.2f}" for f in present)


def finding_errors(
    bank, preds, findings: list[str], thresholds: dict[str, float], n: int = 6
) -> list[tuple[str, str, torch.Tensor, torch.Tensor]]:
    """(heading, caption, rows, finding indices) of false positives (most confident first) and
    false negatives (lowest probability first), over (image, finding) pairs with certain
    labels. A false positive is a finding predicted present on an image whose certain label
    says absent; a false negative the reverse. Nothing for a source without labels."""
    if not bank.labeled.any() or not len(preds.probs):
        return []
    codes = bank.targets
    cut = torch.tensor([thresholds.get(f, 0.5) for f in findings])
    present = preds.probs >= cut[None, :]
    groups = [
        (
            "False positives",
            "Findings predicted present that the labels say are absent, most confident first.",
            (codes == NEGATIVE) & present,
            True,
        ),
        (
            "False negatives",
            "Findings the labels say are present that were predicted absent, lowest "
            "probability first.",
            (codes == POSITIVE) & ~present,
            False,
        ),
    ]
    out = []
    for heading, caption, chosen, descending in groups:
        rows, cols = torch.nonzero(chosen, as_tuple=True)
        scores = preds.probs[rows, cols]
        order = torch.argsort(scores, descending=descending, stable=True)[:n]
        out.append((heading, caption, rows[order], cols[order]))
    return out
