from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from multimix.core.errors import CheckpointError
from multimix.engine.checkpoint import load_state, load_weights, save_state, save_weights
from multimix.models.net import ModelConfig, MultiMixNet

CFG = ModelConfig(widths=(4, 8, 8, 16, 16))


def test_round_trip(tmp_path):
    net = MultiMixNet(CFG)
    save_weights(tmp_path / "w.safetensors", net)
    back = load_weights(tmp_path / "w.safetensors")
    assert back.cfg == CFG
    for a, b in zip(net.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    save_state(tmp_path / "s.pt", {"step": 3, "t": torch.ones(2)})
    assert load_state(tmp_path / "s.pt")["step"] == 3
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    net = MultiMixNet(CFG)
    good = tmp_path / "w.safetensors"
    save_weights(good, net)
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(good.read_bytes()[:1000])
    foreign = tmp_path / "f.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    for path, message in [
        (truncated, "not a readable safetensors"),
        (garbage, "not a readable safetensors"),
        (foreign, "not a multimix checkpoint"),
        (tmp_path / "missing.safetensors", "not found"),
    ]:
        with pytest.raises(CheckpointError, match=message) as err:
            load_weights(path)
        assert "\n" not in str(err.value) and path.name in str(err.value)


def test_state_file_never_unpickles_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="unreadable or unsafe"):
        load_state(path)


# --------------------------------------------------------------------------- pairs


def _pair_state(step: int) -> dict:
    return {"step": step, "t": torch.full((3,), float(step))}


def _weights_of(net: MultiMixNet) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items()}


def _saved_pair(tmp_path):
    from multimix.engine.checkpoint import save_pair

    old = MultiMixNet(CFG)
    save_pair(tmp_path, "last", old, _pair_state(1))
    return old, MultiMixNet(CFG)


def _assert_pair(tmp_path, net: MultiMixNet, step: int) -> None:
    from multimix.engine.checkpoint import load_pair

    model, state = load_pair(tmp_path, "last")
    assert state["step"] == step
    for a, b in zip(net.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob(".*")), list(tmp_path.glob(".*"))  # nothing pending


def test_full_disk_while_saving_keeps_the_previous_pair(tmp_path, monkeypatch):
    import errno

    import multimix.engine.checkpoint as ckpt
    from multimix.core.errors import DataError

    old, new = _saved_pair(tmp_path)

    def full(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".x.tmp"))

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(DataError) as err:
        ckpt.save_pair(tmp_path, "last", new, _pair_state(2))
    assert str(err.value) == f"{tmp_path / 'last.state.pt'}: cannot write: no space left on device"
    monkeypatch.undo()
    _assert_pair(tmp_path, old, 1)


@pytest.mark.parametrize("crash_at", [1, 2])
def test_crash_between_the_renames_resumes_from_a_consistent_pair(tmp_path, monkeypatch, crash_at):
    """A crash (here: an exception no handler sees) before the first or the second rename."""
    import multimix.engine.checkpoint as ckpt

    _, new = _saved_pair(tmp_path)
    real, calls = ckpt.os.replace, []

    def replace(src, dst):
        if not Path(dst).name.startswith("."):  # the final renames, not the temp-file ones
            calls.append(dst)
        if len(calls) == crash_at:
            raise SystemExit("power cut")
        return real(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(SystemExit):
        ckpt.save_pair(tmp_path, "last", new, _pair_state(2))
    monkeypatch.undo()
    # before the fix: new weights with the old state (crash_at=2), a pair that never existed
    _assert_pair(tmp_path, new, 2)


def test_an_unfinished_pending_half_is_discarded(tmp_path):
    from multimix.engine.checkpoint import save_weights

    old, new = _saved_pair(tmp_path)
    save_weights(tmp_path / ".last.safetensors.pending", new, pair="never-finished")
    _assert_pair(tmp_path, old, 1)


def test_weights_and_state_from_different_saves_are_refused(tmp_path):
    from multimix.engine.checkpoint import load_pair, save_pair

    save_pair(tmp_path / "a", "last", MultiMixNet(CFG), _pair_state(1))
    save_pair(tmp_path / "b", "last", MultiMixNet(CFG), _pair_state(2))
    (tmp_path / "b" / "last.state.pt").replace(tmp_path / "a" / "last.state.pt")
    with pytest.raises(CheckpointError, match=r"last\.state\.pt: does not belong to last\."):
        load_pair(tmp_path / "a", "last")
