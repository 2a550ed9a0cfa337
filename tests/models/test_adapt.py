"""--adapt: batch-norm statistics re-estimated on target images, nothing else, no labels."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from multimix.core.errors import ConfigError
from multimix.engine.evaluate import load_run
from multimix.models.adapt import AdaptSpec, adapt_batch_norm
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


def _bank(phantom_dirs):
    from multimix.data.bank import load_bank
    from multimix.data.labels import LabelSpace
    from multimix.data.sources import load_source

    source = load_source(str(phantom_dirs["ped"]))
    return load_bank(source.records, 32, ("lungs",), LabelSpace(("normal", "pneumonia")), "")


def _running(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: b.clone() for k, b in model.named_buffers() if "running" in k}


def test_encoder_scope_leaves_the_classifier_and_decoder_norms_as_trained(joint_run, phantom_dirs):
    _, model = load_run(joint_run)
    bank = _bank(phantom_dirs)
    spec = AdaptSpec(layers="encoder")
    adapted, info = adapt_batch_norm(model, bank.images, torch.device("cpu"), spec=spec)
    before, after = _running(model), _running(adapted)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("encoder.") for k in moved)
    everything = adapt_batch_norm(model, bank.images, torch.device("cpu"), spec=AdaptSpec("all"))[1]
    assert 0 < info.layers < everything.layers
    assert info.as_json()["scope"] == "encoder"


def test_weight_mixes_target_and_training_statistics_linearly(joint_run, phantom_dirs):
    _, model = load_run(joint_run)
    bank = _bank(phantom_dirs)
    cpu = torch.device("cpu")
    spec = AdaptSpec(layers="encoder", weight=1.0)
    full = _running(adapt_batch_norm(model, bank.images, cpu, spec=spec)[0])
    half = _running(adapt_batch_norm(model, bank.images, cpu, spec=AdaptSpec("encoder", 0.25))[0])
    trained = _running(model)
    # The first encoder norm sees the same input either way, so its mix is exact.
    first = next(k for k in trained if k.startswith("encoder.") and k.endswith("running_mean"))
    expected = 0.25 * full[first] + 0.75 * trained[first]
    assert torch.allclose(half[first], expected, atol=1e-6)


def test_fewer_than_two_images_leave_the_statistics_as_trained(joint_run, phantom_dirs):
    _, model = load_run(joint_run)
    one = _bank(phantom_dirs).images[:1]
    adapted, info = adapt_batch_norm(model, one, torch.device("cpu"))
    before, after = _running(model), _running(adapted)
    assert all(torch.equal(before[k], after[k]) for k in before if "num_batches" not in k)
    assert info.layers == 0 and "fewer than 2 images" in info.describe()


@pytest.mark.parametrize(
    ("layers", "weight", "word"),
    [("decoder", 1.0, "--adapt-layers"), ("all", 0.0, "--adapt-weight")],
)
def test_a_bad_adapt_spec_is_a_config_error_that_names_the_option(layers, weight, word):
    with pytest.raises(ConfigError, match=word):
        AdaptSpec(layers, weight)


def test_the_default_spec_is_the_measured_one():
    """benchmarks/results/adapt_scope.md chose encoder-only at weight 0.5; True means it."""
    assert AdaptSpec.of(True) == AdaptSpec("encoder", 0.5)
    assert AdaptSpec.of(False) is None and AdaptSpec.of(None) is None
