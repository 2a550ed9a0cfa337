"""--adapt: batch-norm statistics re-estimated on target images, nothing else, no labels."""

from __future__ import annotations

import shutil

import torch
from torch import nn

from multimix.engine.evaluate import load_run
from multimix.models.adapt import adapt_batch_norm
from multimix.pipelines.evaluate import evaluate_run


def test_adapt_changes_normalisation_statistics_only(joint_run, phantom_dirs):
    from multimix.data.sources import load_source

    _, model = load_run(joint_run)
    source = load_source(str(phantom_dirs["ped"]))
    from multimix.data.bank import load_bank
    from multimix.data.labels import LabelSpace

    bank = load_bank(source.records, 32, ("lungs",), LabelSpace(("normal", "pneumonia")), "")
    adapted, info = adapt_batch_norm(model, bank.images, torch.device("cpu"))
    assert info.layers > 0 and info.images == len(bank)
    before, after = dict(model.named_parameters()), dict(adapted.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)  # no weight moved
    buffers = dict(model.named_buffers())
    moved = [
        k for k, b in adapted.named_buffers() if "running" in k and not torch.equal(b, buffers[k])
    ]
    assert moved  # the statistics did move to the target images
    norms = [m for m in adapted.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(not m.training for m in norms) and not adapted.training


def test_adapt_never_reads_labels(joint_run, phantom_dirs, tmp_path):
    """Shuffled labels: the adapted model predicts exactly the same."""
    ped = tmp_path / "ped"
    shutil.copytree(phantom_dirs["ped"], ped)
    rows = (ped / "labels.csv").read_text().splitlines()
    header, body = rows[0], rows[1:]
    flipped = [
        ",".join([r.split(",")[0], "pneumonia" if "normal" in r else "normal"]) for r in body
    ]
    (ped / "labels.csv").write_text("\n".join([header, *flipped]) + "\n")
    _, kept_a = evaluate_run(joint_run, [str(phantom_dirs["ped"])], keep=True, adapt=True)
    metrics_b, kept_b = evaluate_run(joint_run, [str(ped)], keep=True, adapt=True)
    (_, pa), (_, pb) = kept_a["ph_ped"], kept_b["ped"]
    assert torch.equal(pa.probs, pb.probs) and torch.equal(pa.masks, pb.masks)
    assert metrics_b["sources"]["ped"]["adapted"]["labels_used"] is False
