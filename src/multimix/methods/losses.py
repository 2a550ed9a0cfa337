"""Losses that are specific to this project; plain cross-entropy comes from torch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dice_bce(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Soft Dice + BCE per (image, structure), averaged over the structures that have a mask.

    ``known`` (B, K) lets images carry masks for some structures only; the others are simply not
    supervised, which whole-batch losses such as MONAI's DiceLoss cannot express.
    """
    logits = logits.float()  # fp32 under bf16 autocast too: sigmoid and sums are delicate
    weight = known.to(logits.dtype)
    if weight.sum() == 0:
        return logits.sum() * 0.0
    prob = torch.sigmoid(logits)
    inter = (prob * target).flatten(2).sum(-1)
    denom = prob.flatten(2).sum(-1) + target.flatten(2).sum(-1)
    dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(2).mean(-1)
    return ((dice + bce) * weight).sum() / weight.sum()


def bernoulli_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean pixel-wise KL(Bern(p) || Bern(q)) between two sigmoid predictions.

    The released MultiMix code took a softmax over a one-channel output, which is always 1, so
    its KL was identically zero. Treating each pixel as a Bernoulli variable gives the intended
    term: zero for equal predictions, positive otherwise. Computed from logits for stability.
    """
    p_logits, q_logits = p_logits.float(), q_logits.float()  # fp32 under bf16 autocast too
    p = torch.sigmoid(p_logits)
    log_p, log_1p = F.logsigmoid(p_logits), F.logsigmoid(-p_logits)
    log_q, log_1q = F.logsigmoid(q_logits), F.logsigmoid(-q_logits)
    return (p * (log_p - log_q) + (1 - p) * (log_1p - log_1q)).mean()


def pseudo_label_loss(
    weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch: confident argmax on the weak view trains the strong view.

    Returns the loss (averaged over all unlabeled images, so low confidence lowers its weight)
    and the boolean mask of images whose pseudo-label was kept.
    """
    weak_logits, strong_logits = weak_logits.float(), strong_logits.float()  # fp32 in autocast
    probs = torch.softmax(weak_logits.detach(), dim=1)
    confidence, pseudo = probs.max(dim=1)
    keep = confidence >= threshold
    loss = F.cross_entropy(strong_logits, pseudo, reduction="none")
    return (loss * keep.to(loss.dtype)).mean(), keep


def multilabel_pseudo_label_loss(
    weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch for independent findings: each finding the weak view is confident about
    (probability >= threshold: present; <= 1 - threshold: absent) trains the strong view.

    Averaged over all (image, finding) entries, as the single-label loss is over images; returns
    the loss and the boolean mask of entries kept.
    """
    weak_logits, strong_logits = weak_logits.float(), strong_logits.float()  # fp32 in autocast
    probs = torch.sigmoid(weak_logits.detach())
    present, absent = probs >= threshold, probs <= 1 - threshold
    keep = present | absent
    loss = F.binary_cross_entropy_with_logits(
        strong_logits, present.to(strong_logits.dtype), reduction="none"
    )
    return (loss * keep.to(loss.dtype)).mean(), keep


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent (SimCLR's normalised-temperature cross-entropy) between paired embeddings.

    ``a[k]`` and ``b[k]`` (N, D) are two embeddings of image ``k`` (here: of its pixels and of
    its region's radiomics). Every embedding must pick its partner out of the other 2N - 2 of
    the batch, by cosine similarity over ``temperature``; the loss is the mean cross-entropy of
    those 2N choices. It is lowest when each pair is closer than any non-pair, and rises when
    the pairs are shuffled. With one pair there is nothing to tell apart: 0.
    """
    n = a.shape[0]
    if n < 2:
        return (a.sum() + b.sum()) * 0.0
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, partner)
