"""The shift score: pediatric phantoms lie farther from adult training data than held-out adults."""

from __future__ import annotations

import torch

from multimix.models.shift import make_reference, shift_score
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
    reference = make_reference(train, val)
    near = shift_score(same, reference)
    far = shift_score(same * 3 + 2, reference)
    assert 0.0 <= near["outside_share"] < 0.15 and not near["warning"]
    assert far["outside_share"] > 0.9 and far["warning"]
    few = make_reference(train, val[:10])  # too few validation images to warn on
    assert not shift_score(same * 3 + 2, few)["warning"]


def test_a_folder_is_measured_against_its_nearest_training_source():
    from multimix.models.shift import make_references

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
