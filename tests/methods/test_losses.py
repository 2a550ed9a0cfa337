from __future__ import annotations

import torch

from multimix.methods.losses import (
    bernoulli_kl,
    dice_bce,
    multilabel_pseudo_label_loss,
    pseudo_label_loss,
)


def test_kl_is_zero_for_equal_and_positive_for_different_predictions():
    a = torch.randn(2, 1, 8, 8)
    assert bernoulli_kl(a, a).abs() < 1e-7
    assert bernoulli_kl(a, a + 1.0) > 1e-3
    assert bernoulli_kl(torch.full((1, 1, 2, 2), 3.0), torch.full((1, 1, 2, 2), -3.0)) > 1.0


def test_kl_of_one_channel_softmax_would_be_zero_but_ours_is_not():
    a, b = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    p, q = torch.softmax(a, 1), torch.softmax(b, 1)  # the released code's mistake: all ones
    assert torch.equal(p, q)
    assert bernoulli_kl(a, b) > 0


def test_pseudo_labels_honour_the_threshold():
    weak = torch.tensor([[4.0, 0.0], [0.1, 0.0], [0.0, 3.0]])  # p = .98, .52, .95
    strong = torch.zeros(3, 2, requires_grad=True)
    loss, keep = pseudo_label_loss(weak, strong, threshold=0.7)
    assert keep.tolist() == [True, False, True]
    loss.backward()
    assert strong.grad[1].abs().sum() == 0 and strong.grad[0].abs().sum() > 0
    _, none = pseudo_label_loss(weak, strong, threshold=0.99)
    assert not none.any()


def test_dice_bce_ignores_unknown_structures():
    logits = torch.randn(2, 2, 8, 8)
    target = (torch.rand(2, 2, 8, 8) > 0.5).float()
    known = torch.tensor([[True, False], [True, False]])
    changed = target.clone()
    changed[:, 1] = 1 - changed[:, 1]
    assert torch.equal(dice_bce(logits, target, known), dice_bce(logits, changed, known))
    perfect = dice_bce(target * 40 - 20, target, torch.ones(2, 2, dtype=torch.bool))
    assert perfect < 0.05
    assert dice_bce(logits, target, torch.zeros(2, 2, dtype=torch.bool)) == 0


def test_multilabel_pseudo_labels_keep_only_confident_findings():
    probs = torch.tensor([[0.95, 0.5, 0.05], [0.69, 0.71, 0.31]])
    weak = torch.logit(probs)
    loss, keep = multilabel_pseudo_label_loss(weak, torch.zeros(2, 3), threshold=0.7)
    assert keep.tolist() == [[True, False, True], [False, True, False]]
    # Strong logits that agree with the kept pseudo-labels score lower than ones that oppose them.
    agree = torch.tensor([[9.0, 0.0, -9.0], [0.0, 9.0, 0.0]])
    low, _ = multilabel_pseudo_label_loss(weak, agree, threshold=0.7)
    high, _ = multilabel_pseudo_label_loss(weak, -agree, threshold=0.7)
    assert low < 1e-3 < loss < high
    # Unconfident entries do not contribute, whatever the strong view says there.
    changed = agree.clone()
    changed[0, 1] = changed[1, 0] = -50.0
    assert multilabel_pseudo_label_loss(weak, changed, threshold=0.7)[0] == low
