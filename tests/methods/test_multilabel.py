from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multimix.core.errors import ConfigError
from multimix.data.findings import NEGATIVE, POSITIVE
from multimix.tasks.multilabel import MultiLabelOptions, auto_pos_weight, multilabel_loss

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.2, 4.0]])
TARGET = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def test_bce_matches_torch_and_ignored_entries_get_no_gradient():
    ones = torch.ones_like(TARGET)
    ref = F.binary_cross_entropy_with_logits(LOGITS, TARGET)
    assert multilabel_loss(LOGITS, TARGET, ones) == pytest.approx(ref.item(), rel=1e-6)
    logits = LOGITS.clone().requires_grad_(True)
    weight = ones.clone()
    weight[0, 1] = 0.0
    multilabel_loss(logits, TARGET, weight).backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 1] != 0


def test_focal_down_weights_easy_examples_and_gce_is_bounded():
    ones = torch.ones_like(TARGET)
    bce = multilabel_loss(LOGITS, TARGET, ones, "bce")
    assert multilabel_loss(LOGITS, TARGET, ones, "focal") < bce
    # A confidently wrong label costs BCE ~ the logit, GCE at most 1/q.
    wrong = torch.tensor([[20.0]])
    zero, one = torch.zeros(1, 1), torch.ones(1, 1)
    assert multilabel_loss(wrong, zero, one, "bce") > 19
    assert multilabel_loss(wrong, zero, one, "gce", gce_q=0.7) <= 1 / 0.7 + 1e-6


def test_label_smoothing_and_positive_weights():
    x, one = torch.zeros(1, 1), torch.ones(1, 1)
    smoothed = multilabel_loss(torch.tensor([[10.0]]), one, one, smoothing=0.2)
    assert smoothed > multilabel_loss(torch.tensor([[10.0]]), one, one)
    weighted = multilabel_loss(x, one, one, pos_weight=torch.tensor([3.0]))
    assert weighted == pytest.approx(3 * multilabel_loss(x, one, one).item())


def test_auto_pos_weight_is_negatives_over_positives_capped():
    rows = [(POSITIVE, NEGATIVE)] + [(NEGATIVE, NEGATIVE)] * 3
    assert auto_pos_weight(torch.tensor(rows)).tolist() == [3.0, 4.0]  # none: counted as one
    many = torch.tensor([(POSITIVE,)] + [(NEGATIVE,)] * 30)
    assert auto_pos_weight(many).tolist() == [10.0]


@pytest.mark.parametrize(
    "options",
    [{"aux": ["depth"]}, {"uncertain": "maybe"}, {"loss": "mse"}, {"label_smoothing": 1.0}],
)
def test_options_are_validated(options):
    with pytest.raises(ConfigError):
        MultiLabelOptions(**options).validate()


def test_semi_supervised_variant_draws_unlabeled_views_and_learns_from_pseudo_labels():
    from multimix.core.batch import LABELED, UNLABELED, Batch, Draw
    from multimix.methods.base import LossWeights, get_method
    from multimix.models.net import ModelConfig, MultiMixNet
    from multimix.tasks import get_task

    torch.manual_seed(0)
    model = MultiMixNet(ModelConfig(n_classes=3, widths=(4, 8, 8, 8, 8), task="multilabel"))
    task = get_task("multilabel", ("a", "b", "c"))
    supervised = get_method("multilabel", LossWeights(), task)
    assert list(supervised.streams) == [LABELED]
    method = get_method("multimix", LossWeights(threshold=0.5), task)
    assert list(method.streams) == [UNLABELED, LABELED]
    x = torch.rand(4, 1, 32, 32)
    codes = torch.tensor([[POSITIVE, NEGATIVE, NEGATIVE], [NEGATIVE, POSITIVE, NEGATIVE]])
    batch = Batch(
        {
            LABELED: Draw.of(weak=x[:2], targets=codes),
            UNLABELED: Draw.of(weak=x[2:], strong=x[2:].flip(-1)),
        }
    )
    loss, logs = method.loss(model, batch)
    assert logs["pseudo_kept"] == 1.0  # threshold 0.5: every finding is confident one way
    assert logs["loss_pseudo"] > 0 and torch.isfinite(loss)
    loss.backward()
    _, plain = supervised.loss(model, batch)
    assert "loss_pseudo" not in plain
