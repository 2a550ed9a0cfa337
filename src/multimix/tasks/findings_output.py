"""What ``multimix predict`` writes for a multi-label run: findings, thresholds, zones, maps.

A multi-label run scores each finding on its own (sigmoid), so the prediction is the set of
findings whose probability reaches the finding's threshold (``RUN/thresholds.json``, chosen on
validation after training). With a localization head the zones holding each finding present
are read from the head's maps pooled over the zones of the predicted lung mask, exactly as
``evaluate`` scores them.

Explanations answer "why did it say effusion?": one map per finding called present (each
finding's own logit is explained), and for an image with no finding present the map of its most
probable finding, so every image has at least one map and a reader can see what the strongest
(sub-threshold) suspicion rested on.
"""

from __future__ import annotations

import torch

from multimix.data.sources import LUNGS
from multimix.data.zones import ZONES, lung_zones
from multimix.tasks.base import BatchOutput, PredictionOutput

__all__ = ["NO_FINDING", "UNLOCALIZED", "FindingsOutput", "zone_phrase"]

NO_FINDING = "No Finding"  # NIH convention: predictions.csv reads back as a labels.csv
UNLOCALIZED = "unlocalized"  # a finding present whose zone scores all stay below 0.5


class FindingsOutput(PredictionOutput):
    """CSV columns, overlay captions, zones and explanation targets of a multi-label run."""

    def __init__(
        self,
        model,
        findings: list[str],
        thresholds: dict[str, float],
        structures,
        notes: list[str] | None = None,
    ):
        self.findings = list(findings)
        self.notes = list(notes or [])
        self.cut = torch.tensor([thresholds[f] for f in findings])
        self.thresholds = {f: float(thresholds[f]) for f in findings}
        self.lung = list(structures).index(LUNGS) if LUNGS in structures else None
        self.zones = model.localizer is not None and self.lung is not None

    def header(self) -> list[str]:
        head = ["predicted_findings", *(f"p_{f}" for f in self.findings)]
        return head + list(self.findings)  # 0/1 per finding, named as in a CheXpert table

    def trailing_header(self) -> list[str]:
        return ["zones"] if self.zones else []

    def explain_folders(self, methods: list[str]) -> list[str]:
        return [f"explanations/{m}/{f}" for m in methods for f in self.findings]

    def batch(self, probs, outputs, mask_probs) -> BatchOutput:
        """Findings present at the thresholds, their zones (localization head), one map per
        finding present (else for the most probable)."""
        present = self.present(probs)
        zones = None
        if self.zones:
            zones = self.zone_names(outputs["activation_maps"].float().cpu(), mask_probs, present)
        captions = [
            self.caption(probs[i], present[i], zones[i] if zones else None)
            for i in range(len(probs))
        ]
        cells = [self.row_cells(probs[i], present[i]) for i in range(len(probs))]
        trailing = [[zones[i]] if zones else [] for i in range(len(probs))]
        pairs: list[tuple[int, int | None]] = list(self.targets(probs, present))
        predicted = [
            [f for f, on in zip(self.findings, row.tolist(), strict=True) if on] for row in present
        ]
        return BatchOutput(cells, captions, trailing, pairs, predicted)

    def present(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, F) probabilities -> (B, F) bool: at or above each finding's threshold."""
        return probs >= self.cut[None, :]

    def zone_names(
        self, maps: torch.Tensor, mask_probs: torch.Tensor, present: torch.Tensor
    ) -> list[str]:
        """``effusion:left_lower;nodule:right_upper+right_middle`` per image (findings present
        only), from the localization head's zone scores on the predicted lung mask."""
        from multimix.models.heads import zones_held

        out = []
        for i in range(len(maps)):
            zones = lung_zones(mask_probs[i, self.lung] >= 0.5)
            held = zones_held(maps[i : i + 1].float(), zones[None])[0]
            parts = []
            for f in torch.nonzero(present[i]).flatten().tolist():
                names = [ZONES[z] for z in torch.nonzero(held[f]).flatten().tolist()]
                parts.append(f"{self.findings[f]}:{'+'.join(names) or UNLOCALIZED}")
            out.append(";".join(parts))
        return out

    def row_cells(self, probs: torch.Tensor, present: torch.Tensor) -> list[str]:
        """The cells after ``image``: findings present, probabilities, 0/1 per finding."""
        names = [f for f, on in zip(self.findings, present.tolist(), strict=True) if on]
        return [
            "|".join(names) or NO_FINDING,
            *(f"{float(p):.6f}" for p in probs),
            *("1" if on else "0" for on in present.tolist()),
        ]

    def caption(self, probs: torch.Tensor, present: torch.Tensor, zones: str | None) -> str:
        """Overlay text: one line per finding present (most probable first), with its zones."""
        where = dict(part.split(":", 1) for part in zones.split(";")) if zones else {}
        order = torch.argsort(probs, descending=True, stable=True).tolist()
        lines = []
        for f in order:
            if present[f]:
                name = self.findings[f]
                place = zone_phrase(where[name]) if name in where else ""
                lines.append(f"{name} {float(probs[f]):.2f}" + (f" ({place})" if place else ""))
        return "\n".join(lines) or NO_FINDING.lower()

    def targets(self, probs: torch.Tensor, present: torch.Tensor) -> list[tuple[int, int]]:
        """(image, finding) pairs to explain: the findings present, else the most probable."""
        pairs = []
        for i in range(len(probs)):
            chosen = torch.nonzero(present[i]).flatten().tolist()
            pairs += [(i, f) for f in chosen or [int(probs[i].argmax())]]
        return pairs


def zone_phrase(zones: str) -> str:
    """``right_upper+right_middle+right_lower+left_lower`` -> ``right lung, left lower``: the
    zones of a ``zones`` cell as a radiologist would say them (whole lungs named as such)."""
    if zones == UNLOCALIZED:
        return UNLOCALIZED
    held = set(zones.split("+"))
    sides = []
    for side in ("right", "left"):
        thirds = [t for t in ("upper", "middle", "lower") if f"{side}_{t}" in held]
        if len(thirds) == 3:
            sides.append(f"{side} lung")
        elif thirds:
            sides.append(f"{side} {'/'.join(thirds)}")
    if sides == ["right lung", "left lung"]:
        return "both lungs"
    return ", ".join(sides)
