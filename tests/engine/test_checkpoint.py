from __future__ import annotations

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
