"""The training loop: streams in, a method's loss, checkpoints and logs out; resumable.

A run folder holds everything: config.json, split.json, checkpoints/, train_log.csv,
val_log.csv and tb/. ``multimix train --resume RUN`` continues from checkpoints/last.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from multimix.config import TrainConfig
from multimix.core.batch import LABELED, MASKED, PRETRAIN, UNLABELED, UNMASKED
from multimix.core.errors import CheckpointError, ConfigError
from multimix.core.progress import console, progress_bar
from multimix.core.runlock import run_lock  # robust
from multimix.core.writable import check_writable_dir  # robust
from multimix.data.assemble import (
    TrainingData,
    assemble,
    check_sources,
    load_sources,
    load_split,
    make_split,
    save_split,
)
from multimix.data.bad_inputs import BadInputs, write_skipped
from multimix.data.streams import Pool, SourcePool, Streams
from multimix.engine import checkpoint as ckpt
from multimix.engine import distributed
from multimix.engine.evaluate import evaluate_sources, summary_score
from multimix.engine.finalize import finalize_run
from multimix.engine.logger import CsvLog, TensorBoard
from multimix.engine.precision import run_precision
from multimix.engine.runtime import autocast, compute_settings, seed_everything, select_device
from multimix.methods.base import LossWeights, Method
from multimix.methods.multimix import segmentation_pretraining
from multimix.models.average import WeightAverage
from multimix.models.net import ModelConfig, MultiMixNet

STREAM_NEEDS = {
    MASKED: "masks (--seg-data)",
    UNMASKED: "images without masks",
    LABELED: "class labels (--class-data)",
    UNLABELED: "images without class labels",
}
BATCH_SIZES = ("labeled", "unlabeled")


class Interrupted(Exception):
    """A stop asked for by SIGTERM or Ctrl-C, acted on between two steps."""


class StopFlag:
    """Signal handlers that ask the loop to stop after the step in progress.

    A signal that raised inside a step would leave a half-done step (gradients, optimizer
    moments or batch-norm statistics updated, the step counter not) in the checkpoint, and the
    resumed run would differ from an uninterrupted one. A second Ctrl-C stops at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: signals stay
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def derive_structures(data_sources, roles) -> tuple[str, ...]:
    found: list[str] = []
    for name, source in data_sources.items():
        if "seg" in roles[name]:
            found += [s for s in source.structures if s not in found]
    return tuple(found) or ("lungs",)


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs (or resumes) the loop."""

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        cfg.validate()
        self.cfg = cfg
        self.run = Path(cfg.out)
        self.resume = resume
        self.world, self.device = distributed.setup(cfg.device)
        self.precision = run_precision(self.run, cfg.precision, self.device, resume, self.world)
        seed_everything(cfg.seed)
        self.task = cfg.make_task()
        self.method: Method = cfg.make_method(self.task)
        self.labels = self.task.space
        self.data = self._data()
        self._check_streams()
        self.model = self._model()
        # The weights the run validates and keeps: an average of the trained ones, if asked.
        self.average = WeightAverage(self.model, cfg.weight_ema) if cfg.weight_ema else None
        extra = self.method.setup(self.model)
        groups = [{"params": list(self.model.parameters())}]
        if extra is not None:
            self.method.modules = extra.to(self.device)
            groups.append({"params": list(extra.parameters())})
        self.ddp = distributed.wrap(self.model, self.world, self.device, extra)
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.stop = StopFlag()
        self._stop_requested = False
        self.streams = self._streams()
        self.pretrain = self._pretraining_phase()
        self.step, self.elapsed, self.best = 0, 0.0, -math.inf
        self.train_log = CsvLog(self.run / "train_log.csv")
        self.val_log = CsvLog(self.run / "val_log.csv")
        if resume:
            self._load_last()

    # -- set-up ------------------------------------------------------------------------------
    def _data(self) -> TrainingData:
        cfg = self.cfg
        bad = BadInputs(cfg.on_bad_input)
        sources, roles = load_sources(cfg.data_folders(), bad)
        if not cfg.structures:
            cfg.structures = list(derive_structures(sources, roles))
            if self.world.main:
                cfg.save(self.run)
        structures = tuple(cfg.structures)
        # Every image, mask and label is decoded here, before the split and the first step.
        sources, checked = check_sources(
            sources, roles, self.labels, cfg.image_size, structures, bad
        )
        if self.world.main:
            write_skipped(bad, self.run)
        split_path = self.run / "split.json"
        if self.resume:
            split = load_split(split_path)
        else:
            split = make_split(
                sources,
                roles,
                self.labels,
                cfg.labeled_class,
                cfg.labeled_seg,
                cfg.val_fraction,
                cfg.test_fraction,
                cfg.seed,
            )
            if self.world.main:
                save_split(split_path, split)
        return assemble(sources, split, self.labels, cfg.image_size, structures, checked)

    def _check_streams(self) -> None:
        for stream in self.method.streams.values():
            if stream.rows not in self.data.rows:
                raise ConfigError(f"method {self.method.name!r} draws unknown rows {stream.rows!r}")
            if stream.size not in BATCH_SIZES:
                raise ConfigError(f"stream size must be one of {BATCH_SIZES}, not {stream.size!r}")
            if stream.rows in (MASKED, LABELED) and len(self.data.rows[stream.rows]) == 0:
                raise ConfigError(
                    f"method {self.method.name!r} needs {STREAM_NEEDS[stream.rows]}, "
                    "but the training part has none"
                )

    def _model(self) -> MultiMixNet:
        cfg = self.cfg
        model_cfg = ModelConfig(
            n_classes=len(cfg.classes),
            n_structures=len(cfg.structures),
            widths=tuple(cfg.widths),
            norm=cfg.norm,
            backbone=cfg.backbone,
            bridge=self.method.uses_bridge,
            dropout=cfg.dropout,
            **self.task.model_options(),
        )
        return MultiMixNet(model_cfg).to(self.device, memory_format=torch.channels_last)

    def _streams(self) -> Streams:
        cfg, rows = self.cfg, self.data.rows
        sizes = {"labeled": cfg.batch_size, "unlabeled": cfg.batch_size * cfg.unlabeled_ratio}
        # A stream with nothing to draw from falls back to all training rows it can use.
        fallback = torch.cat([rows[UNMASKED], rows[MASKED]]).unique()
        pools = {}
        records = self.data.bank.records
        for name, stream in self.method.streams.items():
            pool_rows = rows[stream.rows] if len(rows[stream.rows]) else fallback
            size = sizes[stream.size]
            if stream.rows in (UNLABELED, UNMASKED) and cfg.unlabeled_sampling == "source":
                sources = [records[i].source for i in pool_rows.tolist()]
                pools[name] = SourcePool(name, pool_rows, sources, size, cfg.seed, *self._shard())
            else:
                pools[name] = Pool(name, pool_rows, size, cfg.seed, *self._shard())
        roots = {name: source.root for name, source in self.data.sources.items()}
        label_maps = self.task.prepare(self.data.bank, rows, roots)
        return Streams(
            self.data.bank,
            pools,
            cfg.augment,
            cfg.seed,
            self.world.rank,
            label_maps=label_maps,
            class_domain=self.data.class_domain(),
        )

    def _shard(self) -> tuple[int, int]:
        return self.world.rank, self.world.size

    def _pretraining_phase(self) -> tuple[Method, Streams] | None:
        """Segmentation pre-training on pseudo-masks (explanations as labels), if asked for."""
        if not self.cfg.pretrain_masks:
            return None
        rows = self.data.rows[PRETRAIN]
        if len(rows) == 0:
            raise ConfigError("the --pretrain-masks folders hold no masks")
        # The method's loss weights where it has them (the built-ins), else the defaults.
        options = self.method.options
        weights = options if isinstance(options, LossWeights) else None
        method = segmentation_pretraining(self.method.uses_bridge, weights, self.task)
        pool = Pool(PRETRAIN, rows, self.cfg.batch_size, self.cfg.seed, *self._shard())
        streams = Streams(
            self.data.bank, {MASKED: pool}, self.cfg.augment, self.cfg.seed + 1, self.world.rank
        )
        return method, streams

    def _pretraining(self) -> bool:
        return self.pretrain is not None and self._progress() < self.cfg.pretrain_fraction

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.run / "checkpoints"

    def _rank_state(self) -> dict:
        """What differs between ranks: their augmentation generators and torch RNG."""
        return {
            "streams": self.streams.state_dict(),
            "pretrain_streams": self.pretrain[1].state_dict() if self.pretrain else None,
            "torch_rng": torch.get_rng_state(),
        }

    def save(self, tag: str = "last") -> None:
        """Checkpoint (rank 0 writes; under torchrun every rank must call it)."""
        ranks = distributed.gather(self._rank_state(), self.world)
        if not self.world.main:
            return
        state = {
            "step": self.step,
            "elapsed": self.elapsed,
            "best": self.best,
            "optimizer": self.optimizer.state_dict(),
            "world_size": self.world.size,
            "method": self.method.state_dict(),
            "average": self.average.state_dict() if self.average else None,
            **ranks[0],
            "other_ranks": ranks[1:],
        }
        ckpt.save_pair(self.ckpt_dir, tag, self.model, state)  # robust: weights+state pair

    def _load_last(self) -> None:
        ckpt.recover_pair(self.ckpt_dir)  # robust: finish a save a crash interrupted
        weights = self.ckpt_dir / "last.safetensors"
        if not weights.exists():
            return  # interrupted before the first checkpoint: start from step 0
        loaded, state = ckpt.load_pair(self.ckpt_dir, "last", self.device)  # robust
        if loaded.cfg != self.model.cfg:
            raise CheckpointError(weights, "checkpoint was made for a different network")
        self.model.load_state_dict(loaded.state_dict())
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world.size:
            raise CheckpointError(
                self.ckpt_dir / "last.state.pt",
                f"saved by {saved_world} training process(es); resume with the same number "
                f"(now {self.world.size})",
            )
        mine = state if self.world.main else state["other_ranks"][self.world.rank - 1]
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state.get("method", {}))
        if self.average is not None:
            # A checkpoint saved without an average (an edited config) restarts it here.
            self.average.load_state_dict(state.get("average") or self.model.state_dict())
        self.streams.load_state_dict(mine["streams"])
        if self.pretrain and mine.get("pretrain_streams"):
            self.pretrain[1].load_state_dict(mine["pretrain_streams"])
        torch.set_rng_state(mine["torch_rng"])
        self.step, self.elapsed, self.best = state["step"], state["elapsed"], state["best"]
        if self.world.main:
            self.train_log.truncate_after(self.step)
            self.val_log.truncate_after(self.step)
            console.print(f"resuming {self.run} at step {self.step}")

    # -- loop --------------------------------------------------------------------------------
    def _progress(self) -> float:
        cfg = self.cfg
        fractions = []
        if cfg.steps:
            fractions.append(self.step / cfg.steps)
        if cfg.max_minutes:
            fractions.append(self.elapsed / (60 * cfg.max_minutes))
        return min(1.0, max(fractions))

    def _lr(self) -> float:
        warm = min(1.0, (self.step + 1) / max(1, self.cfg.warmup_steps))
        return self.cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * self._progress()))

    def _validation_rows(self) -> dict[str, torch.Tensor]:
        """Val parts of the sources whose labels this method learns from; the others would
        only cost time and, scored with an untrained head, mislead the choice of best."""
        roles = {name: info["roles"] for name, info in self.data.split["sources"].items()}
        wanted = {"class"} if self.method.trains_classifier else set()
        wanted |= {"seg"} if self.method.trains_segmentation else set()
        return {s: rows for s, rows in self.data.val.items() if wanted & set(roles[s])}

    @property
    def kept(self) -> MultiMixNet:
        """The network validation scores and ``best`` keeps: the weight average, if any."""
        return self.average.module if self.average is not None else self.model

    def validate(self) -> dict[str, dict]:
        results = evaluate_sources(
            self.kept, self.data.bank, self._validation_rows(), tuple(self.cfg.classes),
            self.device, score_labels=self.method.trains_classifier,
            score_masks=self.method.trains_segmentation, precision=self.precision,
        )  # fmt: skip
        score = summary_score(results)
        row: dict[str, object] = {"step": self.step, "score": score}
        for source, block in results.items():
            for kind, key in (("classification", "accuracy"), ("classification", "auc")):
                row[f"{source}/{key}"] = (block.get(kind) or {}).get(key)
            row[f"{source}/dice"] = (block.get("segmentation") or {}).get("dice")
        self.val_log.write(row)
        self.tb.scalars("val", row, self.step)
        if score > self.best or not (self.ckpt_dir / "best.safetensors").exists():
            self.best = score if not math.isnan(score) else self.best
            ckpt.save_weights(self.ckpt_dir / "best.safetensors", self.kept)
        return results

    def _done(self) -> bool:
        return self._progress() >= 1.0

    def fit(self) -> Path:
        """Train until the step or time budget is spent; checkpoint at every validation."""
        main = self.world.main
        self.tb = TensorBoard(self.run / "tb", enabled=main)
        total = self.cfg.steps or 1.0  # steps, or the spent share of the time budget
        start = self._clock() - self.elapsed
        bar = f"training {self.method.name}" + (f" ({self.world.size} processes)" * main)
        try:
            bar_or_quiet = progress_bar(bar, total=total) if main else nullcontext(_quiet)
            with self.stop, bar_or_quiet as advance:
                while not self._done():
                    self._train_step(advance, start)
                    if self._stop_requested:
                        raise Interrupted
                    if self.step % self.cfg.val_every == 0 or self._done():
                        if main:
                            score = summary_score(self.validate())
                            console.log(f"step {self.step}: validation score {score:.4f}")
                        self._sync_elapsed(start)
                        self.save("last")
        except (KeyboardInterrupt, Interrupted) as stop:
            if self.world.distributed and not isinstance(stop, Interrupted):
                # A forced stop (second Ctrl-C) lands anywhere: a collective now could hang, so
                # the last regular checkpoint (every --val-every steps) is where a resume starts.
                console.print(f"rank {self.world.rank} interrupted at step {self.step}")
                raise SystemExit(130) from None
            self.save("last")  # between steps; under torchrun every rank stops at this step
            console.print(
                f"interrupted at step {self.step}; checkpoint saved. "
                f"Continue with: multimix train --resume {self.run}"
            )
            raise SystemExit(130) from None
        finally:
            self.tb.close()
        if main and not (self.ckpt_dir / "best.safetensors").exists():
            ckpt.save_weights(self.ckpt_dir / "best.safetensors", self.kept)
        if main:
            self._after_training()
        return self.run

    def _after_training(self) -> None:
        """What the best checkpoint learns from the validation part (``engine.finalize``)."""
        best = ckpt.load_weights(self.ckpt_dir / "best.safetensors", self.device)
        finalize_run(
            self.run, best, self.data, self.task, self.method.trains_segmentation,
            self.cfg.seed, self.device,
        )  # fmt: skip

    def _clock(self) -> float:
        """Seconds on the run's clock: wall time, or the CPU time of this process (all its
        threads), which other jobs on a shared machine do not eat into."""
        return time.process_time() if self.cfg.clock == "cpu" else time.perf_counter()

    def _sync_elapsed(self, start: float) -> None:
        """Every rank must agree on the time spent, or one would stop while others wait."""
        local = {"elapsed": self._clock() - start}
        self.elapsed = distributed.mean(local, self.world, self.device)["elapsed"]

    def _train_step(self, advance, start: float) -> None:
        lr = self._lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        method, streams = self.pretrain if self._pretraining() else (self.method, self.streams)
        batch = streams.draw(method.streams_at(self.step)).to(self.device)
        self.model.train()
        step = self.step
        with autocast(self.device, self.precision):
            if self.ddp:
                loss, logs = self.ddp(method, batch, step)
            else:
                loss, logs = method.loss(self.model, batch, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        method.after_step(self.model, step + 1)
        if self.average is not None:
            self.average.update(self.model, step + 1)
        self.step += 1
        # One reduction per step: rank-averaged losses for the log, a shared clock, and a stop
        # request any rank received (so all ranks stop after the same step).
        logs["elapsed"] = self._clock() - start
        logs["stop"] = float(self.stop.requested)
        logs = distributed.mean(logs, self.world, self.device)
        self.elapsed = logs.pop("elapsed")
        self._stop_requested = logs.pop("stop") > 0
        if self.world.main:
            row = {"step": self.step, "elapsed": round(self.elapsed, 3), "lr": lr}
            row |= {"phase": "pretrain" if method is not self.method else "train", **logs}
            self.train_log.write(row)
            self.tb.scalars("train", logs, self.step)
        advance(info=f"loss {logs['loss']:.3f}", completed=self._completed())

    def _completed(self) -> float:
        return self.step if self.cfg.steps else self._progress()


def _quiet(*args, **kwargs) -> None:
    """The progress callback of ranks other than 0."""


def train(cfg: TrainConfig) -> Path:
    """Start a new run in ``cfg.out``."""
    run = Path(cfg.out)
    if (run / "checkpoints" / "last.safetensors").exists():
        raise ConfigError(f"{run} already holds a run; use --resume {run} or another --out")
    cfg.validate()
    main = int(os.environ.get("RANK", 0)) == 0
    if main:
        check_writable_dir(run)  # robust: before any long work
        run.mkdir(parents=True, exist_ok=True)
    with run_lock(run, enabled=main):  # robust: one process per run folder
        if main:
            cfg.save(run)
        return _fit(cfg, resume=False)


def resume(run: Path) -> Path:
    """Continue the run in ``run`` from its last checkpoint."""
    cfg = TrainConfig.load(run)
    cfg.out = str(run)
    main = int(os.environ.get("RANK", 0)) == 0
    if main:
        check_writable_dir(run, option="--resume")  # robust
    with run_lock(run, enabled=main):  # robust: one process per run folder
        return _fit(cfg, resume=True)


def _fit(cfg: TrainConfig, resume: bool) -> Path:
    """Build, train, and under torchrun leave the process group cleanly."""
    trainer, finished = None, False
    try:
        with compute_settings(cfg.threads, select_device(cfg.device)):  # restored on the way out
            trainer = Trainer(cfg, resume=resume)
            run = trainer.fit()
        finished = True
        return run
    finally:
        if trainer is not None:
            trainer.ddp = None  # DDP's reducer must be gone before its process group is
        gc.collect()
        distributed.shutdown(barrier=finished)
