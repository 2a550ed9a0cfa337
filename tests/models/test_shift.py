"""The shift score: pediatric phantoms lie farther from adult training data than held-out adults."""

from __future__ import annotations

import torch

from multimix.models.shift import (
    SHIFT_FILE,
    make_references,
    read_reference,
    shift_score,
    write_reference,
)
from multimix.pipelines.evaluate import evaluate_run


def test_shift_score_is_higher_for_pediatric_than_for_held_out_adult_images(
    joint_run, phantom_dirs
):
    metrics, _ = evaluate_run(joint_run, [str(phantom_dirs["seg"]), str(phantom_dirs["ped"])])
    adult, child = metrics["sources"]["ph_seg"]["shift"], metrics["sources"]["ph_ped"]["shift"]
    assert child["outside_share"] > adult["outside_share"]
    assert child["median_distance_ratio"] > adult["median_distance_ratio"]
    assert not adult["warning"]


def test_in_distribution_images_score_about_the_validation_share():
    g = torch.Generator().manual_seed(0)
    train, val, same = (torch.randn(n, 16, generator=g) for n in (400, 200, 400))
    reference = make_references({"training": (train, val)})
    near = shift_score(same, reference)
    far = shift_score(same * 3 + 2, reference)
    assert 0.0 <= near["outside_share"] < 0.15 and not near["warning"]
    assert far["outside_share"] > 0.9 and far["warning"]
    few = make_references({"training": (train, val[:10])})  # too few validation images to warn on
    assert not shift_score(same * 3 + 2, few)["warning"]


def test_a_folder_is_measured_against_its_nearest_training_source():
    g = torch.Generator().manual_seed(1)

    def draw(n: int, shift: float) -> torch.Tensor:
        return torch.randn(n, 16, generator=g) + shift

    reference = make_references(
        {"adult": (draw(300, 0.0), draw(100, 0.0)), "child": (draw(300, 6.0), draw(100, 6.0))}
    )
    like_child = shift_score(draw(200, 6.0), reference)
    assert like_child["nearest_source"] == "child" and like_child["outside_share"] < 0.15
    elsewhere = shift_score(draw(200, -6.0), reference)
    assert elsewhere["outside_share"] > 0.9 and elsewhere["warning"]


def test_a_change_in_how_features_move_together_is_seen():
    """Same per-feature spread, features no longer coupled: a per-channel (diagonal) distance
    would miss it; the covariance does not."""
    g = torch.Generator().manual_seed(2)

    def coupled(n: int) -> torch.Tensor:
        base = torch.randn(n, 8, generator=g)
        return torch.cat([base, base + 0.05 * torch.randn(n, 8, generator=g)], dim=1)

    reference = make_references({"training": (coupled(400), coupled(200))})
    assert shift_score(coupled(300), reference)["outside_share"] < 0.15
    uncoupled = torch.randn(300, 16, generator=g)  # same marginals (about), no coupling
    assert shift_score(uncoupled, reference)["outside_share"] > 0.9


def test_the_reference_reads_back_exactly_and_an_older_one_is_not_read(tmp_path):
    g = torch.Generator().manual_seed(3)
    train, val, probe = (torch.randn(n, 12, generator=g) for n in (100, 40, 30))
    reference = make_references({"kermany": (train, val), "covid": (train + 1, val + 1)})
    write_reference(tmp_path, reference)
    again = read_reference(tmp_path)
    assert again is not None and shift_score(probe, again) == shift_score(probe, reference)
    (tmp_path / SHIFT_FILE).write_text('{"mean": [0.0], "std": [1.0], "val_p95": 1.0}')
    assert read_reference(tmp_path) is None  # a diagonal reference of an older multimix
