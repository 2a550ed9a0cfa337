from __future__ import annotations

import csv

import numpy as np
import torch

from multimix.data.phantom import make_phantom, write_source
from multimix.data.phantom_findings import FINDINGS
from multimix.data.sources import load_source
from multimix.metrics.segmentation import segmentation_metrics


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_findings_are_drawn_with_boxes_and_an_enlarged_heart():
    plain = make_phantom(np.random.default_rng(4), 96, with_findings=set())
    big = make_phantom(np.random.default_rng(4), 96, with_findings={"cardiomegaly", "effusion"})
    assert plain.label == "No Finding" and plain.boxes == []
    assert big.label == "cardiomegaly|effusion"
    assert big.masks["heart"].sum() > 1.4 * plain.masks["heart"].sum()
    for _, x, y, w, h in big.boxes:
        assert min(x, y) >= 0 and x + w <= 96 and y + h <= 96 and min(w, h) > 0
    effusion = next(b for b in big.boxes if b[0] == "effusion")
    assert effusion[2] > 96 // 2  # fluid lies in the lower half


def test_multilabel_source_layout_noise_and_structures(tmp_path):
    clean = write_source(tmp_path / "clean", 40, seed=2, size=48, multilabel=True)
    noisy = write_source(tmp_path / "noisy", 40, seed=2, size=48, multilabel=True, label_noise=0.3)
    truth = {r["image"]: r["label"] for r in rows(clean / "labels_clean.csv")}
    assert {r["image"]: r["label"] for r in rows(clean / "labels.csv")} == truth
    flipped = sum(
        (f in r["label"].split("|")) != (f in truth[r["image"]].split("|"))
        for r in rows(noisy / "labels.csv")
        for f in FINDINGS
    )
    assert 0.15 * 160 < flipped < 0.45 * 160  # about 30% of 40 x 4 labels
    assert rows(noisy / "labels_clean.csv") == rows(clean / "labels_clean.csv")
    boxes = rows(clean / "boxes.csv")
    assert boxes and all(b["label"] in truth[b["image"]].split("|") for b in boxes)
    source = load_source(clean)
    assert source.structures == ("lungs", "clavicles", "heart")


def test_per_structure_dice_on_phantoms_is_exact_and_drops_for_a_wrong_structure():
    phs = [make_phantom(np.random.default_rng(i), 64, with_findings=set()) for i in range(4)]
    names = ("lungs", "heart", "clavicles")
    target = torch.from_numpy(np.stack([[p.masks[n] for n in names] for p in phs]))
    known = torch.ones((4, 3), dtype=torch.bool)
    known[0, 2] = False  # a missing structure is not scored
    exact = segmentation_metrics(target, target, known, names)
    assert all(exact[n]["dice"] == 1.0 for n in names) and exact["clavicles"]["n"] == 3
    wrong = target.clone()
    wrong[:, 1] = torch.roll(wrong[:, 1], shifts=6, dims=-1)  # heart shifted 6 px
    scored = segmentation_metrics(wrong, target, known, names)
    assert scored["lungs"]["dice"] == 1.0 and scored["heart"]["dice"] < 0.9
