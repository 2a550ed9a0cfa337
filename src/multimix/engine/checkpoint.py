"""Crash-safe checkpoints: weights in safetensors, training state beside them, both atomic.

Nothing here unpickles arbitrary objects: weights are safetensors, and the state file is read
with ``torch.load(weights_only=True)``, which only admits tensors and plain containers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from multimix.core.atomic import atomic_write
from multimix.core.errors import CheckpointError, ConfigError
from multimix.models.net import ModelConfig, MultiMixNet

FORMAT = "multimix-checkpoint-1"


def save_weights(path: Path, model: MultiMixNet) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "model": json.dumps(model.cfg.to_dict())}
    atomic_write(path, lambda fh: fh.write(save(state, metadata=meta)))


def load_weights(path: Path, device: torch.device | str = "cpu") -> MultiMixNet:
    """Rebuild the network from a weights file; a wrong file gives one line saying why."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "checkpoint not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(path, "not a multimix checkpoint (no multimix metadata)")
    try:
        cfg = ModelConfig.from_dict(json.loads(meta["model"]))
        model = MultiMixNet(cfg)
    except ConfigError as exc:  # a backbone whose module is not imported in this process
        raise CheckpointError(path, f"cannot rebuild the model ({exc})") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(path, f"model description is damaged ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(path, f"weights do not fit the model ({first})") from None
    return model.to(device)


def save_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_state(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "training state not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or unsafe file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, f"unreadable or unsafe training state ({reason})") from None
