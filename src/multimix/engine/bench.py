"""``multimix bench``: how fast training and inference run here, against what the hardware allows.

One run measures a matmul peak, the throughput of a full MultiMix training step (all five
streams, with the trainer's model, method, optimizer and memory format) and of inference
(classify + segment + bridge, as ``predict`` runs it), the FLOPs each performs (counted by
torch, not estimated), the achieved share of the peak, and the same step done the
straightforward way, for comparison. The three are timed in rounds, one call of each per round,
so a shared machine's drift touches them alike. Inputs are synthetic: the cost of a step does
not depend on pixel values, and no data folder is needed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from multimix.core.atomic import atomic_write_text
from multimix.core.batch import LABELED, MASKED, UNLABELED, UNMASKED, Batch, Draw
from multimix.core.errors import ConfigError
from multimix.engine import runtime
from multimix.engine.measure import (
    count_flops,
    environment,
    matmul_peaks,
    profile_operators,
    synchronizer,
    time_rounds,
)
from multimix.engine.precision import choose_precision, precision_dtype
from multimix.methods.base import LossWeights, get_method
from multimix.methods.losses import bernoulli_kl, dice_bce, pseudo_label_loss
from multimix.methods.multimix import JointObjective
from multimix.models.backbones import DEFAULT_WIDTHS
from multimix.models.blocks import NORMS
from multimix.models.fusion import inference_network
from multimix.models.inference import forward_in_chunks
from multimix.models.net import ModelConfig, MultiMixNet
from multimix.models.saliency import input_saliency

Autocast = Callable[[], contextlib.AbstractContextManager]
LossFn = Callable[[MultiMixNet, Batch], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class BenchConfig:
    """What one benchmark run measures; saved in ``bench.json`` so it can be repeated."""

    image_size: int = 256
    batch_size: int = 8  # per stream, as ``multimix train --batch-size``
    unlabeled_ratio: int = 1
    infer_batch_size: int = 32
    device: str = "auto"
    threads: int | None = None
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    norm: str = "batch"
    warmup: int = 2  # untimed calls before each timing
    steps: int | None = None  # timed calls per timing (5 unless --seconds is given)
    seconds: float | None = None  # or: keep timing each measurement this long
    matmul_size: int | None = None  # default: 2048 on CPU, 8192 on GPU
    matmul_repeats: int = 5
    profile_steps: int = 0  # > 0: profile this many training steps, top operators in the JSON
    seed: int = 0
    precision: str | None = None  # auto, fp32, bf16 or both; None: both where auto picks bf16

    def validate(self) -> None:
        if not self.widths or min(self.widths) < 1:
            example = ",".join(map(str, DEFAULT_WIDTHS))
            raise ConfigError(f"--widths must be positive channel counts, e.g. {example}")
        if self.norm not in NORMS:
            raise ConfigError(f"unknown --norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        levels = 2 ** (len(self.widths) - 1)
        if self.image_size < levels or self.image_size % levels:
            raise ConfigError(
                f"--image-size must be a multiple of {levels} "
                f"for a {len(self.widths)}-level network"
            )
        for name in ("batch_size", "unlabeled_ratio", "infer_batch_size", "matmul_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup < 0 or self.profile_steps < 0:
            raise ConfigError("--warmup and --profile-steps must be >= 0")
        if self.steps is not None and self.steps < 1:
            raise ConfigError("--steps must be at least 1")
        if self.seconds is not None and self.seconds <= 0:
            raise ConfigError("--seconds must be positive")
        if self.matmul_size is not None and self.matmul_size < 1:
            raise ConfigError("--matmul-size must be at least 1")
        if self.precision is not None and self.precision not in BENCH_PRECISIONS:
            raise ConfigError(
                f"unknown --precision {self.precision!r}; use auto, fp32, bf16 or both"
            )


# -- the steps being timed ---------------------------------------------------------------------
def synthetic_batch(cfg: BenchConfig, n_structures: int = 1, n_classes: int = 2) -> Batch:
    """All five streams, shaped as the trainer draws them (masks, unlabeled, classes, views)."""
    g = torch.Generator().manual_seed(cfg.seed)
    b, u, s = cfg.batch_size, cfg.batch_size * cfg.unlabeled_ratio, cfg.image_size

    def images(n: int) -> torch.Tensor:
        return torch.rand(n, 1, s, s, generator=g)

    seg_x = images(b)
    seg_y = (torch.rand(b, n_structures, s, s, generator=g) > 0.5).float()
    known = torch.ones(b, n_structures, dtype=torch.bool)
    segu_x, cls_x = images(b), images(b)
    cls_y = torch.randint(0, n_classes, (b,), generator=g)
    weak, strong = images(u), images(u)
    return Batch(
        {
            MASKED: Draw.of(weak=seg_x, masks=seg_y, known=known),
            UNMASKED: Draw.of(weak=segu_x),
            LABELED: Draw.of(weak=cls_x, targets=cls_y),
            UNLABELED: Draw.of(weak=weak, strong=strong),
        }
    )


def images_per_step(batch: Batch) -> int:
    """Images that go through the encoder in one step (weak and strong views count apart)."""
    return sum(len(draw) * len(draw.views) for draw in batch.values())


def straightforward_loss(
    method: JointObjective, model: MultiMixNet, batch: Batch
) -> tuple[torch.Tensor, dict[str, float]]:
    """The MultiMix objective computed the plain way: the baseline the real step is timed against.

    The saliency comes from a separate encoder pass over every image of every stream, and the
    decoder runs on every image. The loss terms are those of ``method.loss`` (in eval mode the
    same values); the real step takes the saliency from its training pass and decodes only the
    mask streams.
    """
    w = method.options
    seg, unlabeled = batch[MASKED], batch[UNLABELED]
    cls_y = batch[LABELED].targets
    parts = (
        seg["weak"].x, batch[UNMASKED]["weak"].x, batch[LABELED]["weak"].x,
        unlabeled["weak"].x, unlabeled["strong"].x,
    )  # fmt: skip
    n_seg, n_segu, n_cls, n_weak, _ = (p.shape[0] for p in parts)
    x = torch.cat(parts)
    feats = model.encode(x)
    logits = model.classify(feats)
    x_sal = x.detach().requires_grad_(True)
    sal = input_saliency(model.classify(model.encode(x_sal)), x_sal)
    mask_logits = model.segment(feats, x, sal)

    seg = dice_bce(mask_logits[:n_seg], seg["weak"].masks, seg.known)
    m = min(n_seg, n_segu)
    kl = bernoulli_kl(mask_logits[:m].detach(), mask_logits[n_seg : n_seg + m])
    start = n_seg + n_segu
    cls_logits = logits[start : start + n_cls]
    ce = F.cross_entropy(cls_logits, cls_y)
    weak = logits[start + n_cls : start + n_cls + n_weak]
    strong = logits[start + n_cls + n_weak :]
    pl, keep = pseudo_label_loss(weak, strong, w.threshold)
    total = w.seg * seg + w.consistency * kl + w.cls * ce + w.pseudo * pl
    logs = {
        "loss_seg": seg.item(),
        "loss_kl": kl.item(),
        "loss_cls": ce.item(),
        "train_acc": (cls_logits.argmax(1) == cls_y).float().mean().item(),
        "loss_pseudo": pl.item(),
        "pseudo_kept": keep.float().mean().item(),
        "loss": total.item(),
    }
    return total, logs


@dataclass
class Setup:
    """A model, its optimizer and the loss a timed step minimises, built as the trainer does."""

    model: MultiMixNet
    optimizer: torch.optim.Optimizer
    loss: LossFn


def build(cfg: BenchConfig, device: torch.device, straightforward: bool = False) -> Setup:
    method = get_method("multimix-paper", LossWeights())
    assert isinstance(method, JointObjective)
    torch.manual_seed(cfg.seed)  # every variant starts from the same weights
    model_cfg = ModelConfig(widths=tuple(cfg.widths), norm=cfg.norm, bridge=method.uses_bridge)
    model = MultiMixNet(model_cfg).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    if straightforward:
        return Setup(model, optimizer, lambda m, b: straightforward_loss(method, m, b))
    return Setup(model, optimizer, method.loss)


def train_step(setup: Setup, batch: Batch, autocast: Autocast = contextlib.nullcontext) -> None:
    """One optimizer step, as ``Trainer._train_step`` takes it."""
    setup.model.train()
    with autocast():
        loss, _ = setup.loss(setup.model, batch)
    setup.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    setup.optimizer.step()


def infer_step(model: MultiMixNet, x: torch.Tensor, autocast: Autocast = contextlib.nullcontext):
    """Class logits, mask logits and saliency of a batch, as ``engine.inference.predict`` runs
    them: the inference copy (``models.fusion.inference_network``) in chunks, the saliency
    walked back by hand, the decoder without gradients."""
    model.eval()
    with autocast():
        return forward_in_chunks(model, x)


# -- the run -----------------------------------------------------------------------------------
BENCH_PRECISIONS = ("auto", "fp32", "bf16", "both")


def bench_precisions(cfg: BenchConfig, device: torch.device) -> tuple[list[str], str, str]:
    """The precisions to time, the one the top-level figures are for (what ``auto`` picks, when
    timed), and why ``auto`` picks what it does. Default: both where ``auto`` picks bf16."""
    auto, reason = choose_precision("auto", device)
    asked = cfg.precision or ("both" if auto == "bf16" else "fp32")
    timed = ["fp32", "bf16"] if asked == "both" else [auto if asked == "auto" else asked]
    return timed, (auto if auto in timed else timed[0]), reason


def _figures(rate: dict, work: dict, peaks_before: dict, peaks_after: dict, timings: dict) -> dict:
    """The figures of one precision: throughputs, their share of that precision's peak."""
    # The peak drifts by several percent within a minute on shared machines: the share is taken
    # of the best seen at either end, never of a dip.
    peaks = {lib: max(peaks_before[lib], peaks_after[lib]) for lib in peaks_before}
    peak = max(peaks.values())
    return {
        "peak_gflops": peak,
        "peak_gflops_by_library": peaks,
        "peak_gflops_before_after": [max(peaks_before.values()), max(peaks_after.values())],
        "train_images_per_s": rate["train"],
        "train_share_of_peak": rate["train"] * work["train"] / peak,
        "gflops_per_image": work["train"],
        "straightforward_train_images_per_s": rate["straightforward"],
        "straightforward_share_of_peak": rate["straightforward"] * work["straightforward"] / peak,
        "straightforward_gflops_per_image": work["straightforward"],
        "train_speedup": rate["train"] / rate["straightforward"],
        "train_flop_ratio": work["straightforward"] / work["train"],
        "infer_images_per_s": rate["infer"],
        "infer_share_of_peak": rate["infer"] * work["infer"] / peak,
        "infer_gflops_per_image": work["infer"],
        "timings": {name: timing.summary() for name, timing in timings.items()},
    }


def run_bench(cfg: BenchConfig, log: Callable[[str], object] = lambda _: None) -> dict:
    """Measure everything ``bench.json`` holds (see the module docstring and the README).

    Each precision timed gets its own model (the same initial weights), its own matmul peak (in
    its dtype) and its calls in the same rounds as the others', so ``bf16_over_fp32`` compares
    figures a drift touched alike. The top-level figures are those of ``precision``.
    """
    cfg.validate()
    device = runtime.select_device(cfg.device)
    with runtime.compute_settings(cfg.threads, device):  # restored: bench runs in-process too
        return _measure(cfg, device, log)


def _measure(cfg: BenchConfig, device: torch.device, log: Callable[[str], object]) -> dict:
    timed, top, reason = bench_precisions(cfg, device)
    log(f"precisions timed: {', '.join(timed)}; figures at the top: {top} ({reason})")

    size = cfg.matmul_size or (8192 if device.type == "cuda" else 2048)
    log(f"matmul peak: {size}x{size}, best of {cfg.matmul_repeats}, before and after the timings")
    peaks_before = {
        p: matmul_peaks(device, size, cfg.matmul_repeats, precision_dtype(p)) for p in timed
    }

    batch = synthetic_batch(cfg).to(device)
    n_train = images_per_step(batch)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    x = torch.rand(cfg.infer_batch_size, 1, cfg.image_size, cfg.image_size, generator=g)
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    sizes = {"train": n_train, "straightforward": n_train, "infer": cfg.infer_batch_size}
    calls: dict[str, Callable[[], object]] = {}
    for p in timed:

        def autocast(p: str = p) -> contextlib.AbstractContextManager:
            return runtime.autocast(device, p)  # as the trainer and ``predict`` run it

        setups = {"train": build(cfg, device), "straightforward": build(cfg, device, True)}
        for name, s in setups.items():
            calls[f"{name}/{p}"] = lambda s=s, a=autocast: train_step(s, batch, a)
        # the inference copy ``predict`` runs: folded, fused, in this precision's dtype
        model = inference_network(setups["train"].model, precision_dtype(p))
        calls[f"infer/{p}"] = lambda m=model, a=autocast: infer_step(m, x, a)
    # FLOPs do not depend on the dtype: counted once, on the first precision's calls.
    work = {k: count_flops(calls[f"{k}/{timed[0]}"]) / n / 1e9 for k, n in sizes.items()}

    log(
        f"timing in rounds: a training step and a straightforward one of {n_train} images, "
        f"inference on {cfg.infer_batch_size}, in {' and '.join(timed)}"
    )
    timings = time_rounds(calls, synchronizer(device), cfg.warmup, cfg.steps, cfg.seconds)
    profile = None
    if cfg.profile_steps:
        log(f"profiling {cfg.profile_steps} training steps ({top})")
        profile = profile_operators(calls[f"train/{top}"], cfg.profile_steps, device)
    peaks_after = {
        p: matmul_peaks(device, size, cfg.matmul_repeats, precision_dtype(p)) for p in timed
    }

    precisions = {}
    for p in timed:
        mine = {k: timings[f"{k}/{p}"] for k in sizes}
        rate = {k: sizes[k] / t.median for k, t in mine.items()}
        precisions[p] = _figures(rate, work, peaks_before[p], peaks_after[p], mine)
    env = environment(device) | {"precision": top, "precision_auto": reason}
    result = {
        **precisions[top],
        "precision": top,
        "config": asdict(cfg) | {"matmul_size": size, "train_images_per_step": n_train},
        "environment": env,
        "precisions": precisions,
    }
    if len(precisions) == 2:
        bf16, fp32 = precisions["bf16"], precisions["fp32"]
        result["bf16_over_fp32"] = {
            kind: bf16[f"{kind}_images_per_s"] / fp32[f"{kind}_images_per_s"]
            for kind in ("train", "infer")
        }
    if profile is not None:
        result["train_profile"] = profile
    return result


def write_bench(cfg: BenchConfig, out: Path, log: Callable[[str], object] = lambda _: None):
    """Run the benchmark and write ``out`` (JSON) atomically; returns what was written."""
    result = run_bench(cfg, log)
    atomic_write_text(out, json.dumps(result, indent=2))
    return result
