from __future__ import annotations

import pytest
import torch

from multimix.config import TrainConfig
from multimix.core.errors import ConfigError
from multimix.engine.checkpoint import load_weights
from multimix.engine.trainer import Trainer, resume, train

SMALL = dict(image_size=32, widths=[8, 16, 16, 32, 32], batch_size=6, val_every=10, seed=0)


def _cfg(tmp_path, phantom_dirs, name, **kw) -> TrainConfig:
    base = dict(
        out=str(tmp_path / name),
        class_data=[str(phantom_dirs["cls"])],
        seg_data=[str(phantom_dirs["seg"])],
        labeled_class=12,
        labeled_seg=6,
        **SMALL,
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_short_run_raises_dice_well_above_its_start(tmp_path, phantom_dirs):
    cfg = _cfg(tmp_path, phantom_dirs, "unet", method="unet", steps=120, labeled_seg=None)
    trainer = Trainer(cfg)
    (trainer.run).mkdir(parents=True, exist_ok=True)
    from multimix.engine.logger import TensorBoard

    trainer.tb = TensorBoard(trainer.run / "tb")
    before = trainer.validate()["ph_seg"]["segmentation"]["dice"]
    trainer.fit()
    after = trainer.validate()["ph_seg"]["segmentation"]["dice"]
    assert after > before + 0.3 and after > 0.75, (before, after)


@pytest.mark.slow
def test_multimix_run_folder_and_exact_resume(tmp_path, phantom_dirs):
    full = train(_cfg(tmp_path, phantom_dirs, "full", steps=20))
    for name in ("config.json", "split.json", "train_log.csv", "val_log.csv"):
        assert (full / name).exists()
    assert (full / "checkpoints" / "best.safetensors").exists()

    # Interrupt at step 13 (Ctrl-C), then resume to step 20: same weights as the full run.
    part = _cfg(tmp_path, phantom_dirs, "part", steps=20)
    (tmp_path / "part").mkdir()
    part.save(tmp_path / "part")
    trainer = Trainer(part)
    step = trainer._train_step

    def interrupting(advance, start):
        if trainer.step == 13:
            raise KeyboardInterrupt
        step(advance, start)

    trainer._train_step = interrupting
    with pytest.raises(SystemExit):
        trainer.fit()
    resume(tmp_path / "part")
    a = load_weights(full / "checkpoints" / "last.safetensors").state_dict()
    b = load_weights(tmp_path / "part" / "checkpoints" / "last.safetensors").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    steps = [r.split(",")[0] for r in (tmp_path / "part" / "train_log.csv").read_text().split()]
    assert steps[1:] == [str(i) for i in range(1, 21)]


def test_refuses_to_overwrite_a_run_and_needs_labels(tmp_path, phantom_dirs):
    with pytest.raises(ConfigError, match="needs class labels"):
        Trainer(_cfg(tmp_path, phantom_dirs, "x", class_data=[], method="enc", steps=1))
    with pytest.raises(ConfigError, match="at least one"):
        TrainConfig(out="x", steps=1).validate()


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_time_budget_counts_on_the_chosen_clock(tmp_path, phantom_dirs, monkeypatch, clock):
    """--clock cpu reads process CPU time (a shared machine cannot shorten the run); wall reads
    the wall clock. Each fake clock advances 30 s per reading, so a 1.5-minute budget ends
    after a few steps on the chosen clock while the other clock stands still."""
    import multimix.engine.trainer as trainer_module

    ticks = {"n": 0.0}

    def moving() -> float:
        ticks["n"] += 30.0
        return ticks["n"]

    moving_name = "process_time" if clock == "cpu" else "perf_counter"
    still_name = "perf_counter" if clock == "cpu" else "process_time"
    monkeypatch.setattr(trainer_module.time, moving_name, moving)
    monkeypatch.setattr(trainer_module.time, still_name, lambda: 0.0)
    cfg = _cfg(tmp_path, phantom_dirs, clock, method="unet", max_minutes=1.5, clock=clock)
    trainer = Trainer(cfg)
    trainer.fit()
    assert 1 <= trainer.step <= 4 and trainer.elapsed >= 90.0


def test_unknown_clock_is_a_config_error(tmp_path, phantom_dirs):
    with pytest.raises(ConfigError, match="--clock"):
        Trainer(_cfg(tmp_path, phantom_dirs, "bad", clock="sundial"))


def test_weight_average_is_what_the_run_keeps_and_resumes_exactly(tmp_path, phantom_dirs):
    from multimix.engine.checkpoint import load_state
    from tests.resume_helpers import stop_then_resume

    def cfg(name: str) -> TrainConfig:
        return _cfg(tmp_path, phantom_dirs, name, method="unet", steps=6, val_every=6,
                    weight_ema=0.9)  # fmt: skip

    full = train(cfg("full"))
    resumed = stop_then_resume(cfg("resumed"), stop_after=2)
    a = load_state(full / "checkpoints" / "last.state.pt")["average"]
    b = load_state(resumed / "checkpoints" / "last.state.pt")["average"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # One validation, at the last step: best holds the average then, not the trained weights.
    best = load_weights(full / "checkpoints" / "best.safetensors").state_dict()
    last = load_weights(full / "checkpoints" / "last.safetensors").state_dict()
    for key in best:
        assert torch.equal(best[key], a[key]), key
    assert any(not torch.equal(best[k], last[k]) for k in best if best[k].is_floating_point())


def test_weight_average_decay_must_lie_below_one(tmp_path, phantom_dirs):
    with pytest.raises(ConfigError, match="--weight-ema"):
        _cfg(tmp_path, phantom_dirs, "x", steps=1, weight_ema=1.0).validate()


def test_source_sampling_shares_unlabeled_batches_and_resumes_exactly(tmp_path, phantom_dirs):
    import copy

    from multimix.core.batch import UNLABELED
    from multimix.data.streams import SourcePool
    from tests.resume_helpers import assert_same_weights, stop_then_resume

    def cfg(name: str) -> TrainConfig:
        return _cfg(tmp_path, phantom_dirs, name, steps=4, val_every=4,
                    unlabeled_sampling="source",
                    method_options={"unlabeled_from": 0, "unlabeled_every": 1})  # fmt: skip

    def check(trainer: Trainer) -> None:
        streams, records = trainer.streams, trainer.data.bank.records
        pool = streams.pools[UNLABELED]
        assert isinstance(pool, SourcePool) and set(pool.pools) == {"ph_cls", "ph_seg"}
        state = copy.deepcopy(streams.state_dict())
        rows = streams.draw({UNLABELED: trainer.method.streams[UNLABELED]})[UNLABELED].rows
        sources = [records[i].source for i in rows.tolist()]
        assert sources.count("ph_cls") == sources.count("ph_seg") == len(sources) // 2
        streams.load_state_dict(state)  # the run then draws what the full run drew

    full = train(cfg("full"))
    assert_same_weights(full, stop_then_resume(cfg("resumed"), stop_after=2, check=check))


def test_unknown_unlabeled_sampling_is_a_config_error(tmp_path, phantom_dirs):
    with pytest.raises(ConfigError, match="--unlabeled-sampling"):
        _cfg(tmp_path, phantom_dirs, "x", steps=1, unlabeled_sampling="hospital").validate()
