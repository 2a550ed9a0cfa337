"""Crash-safe checkpoints: weights in safetensors, training state beside them, both atomic.

Weights and training state are saved as a pair (:func:`save_pair`): both are written in full
to hidden ``.TAG.*.pending`` names, and only then renamed into place, weights first. Each half
carries the same random ``pair`` token. A crash at any point leaves either the previous pair or
the new weights with the new state still pending, which :func:`recover_pair` (called before
loading) completes, so the run folder is always resumable from a consistent pair.

Nothing here unpickles arbitrary objects: weights are safetensors, and the state file is read
with ``torch.load(weights_only=True)``, which only admits tensors and plain containers.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from multimix.core.atomic import atomic_write, write_error
from multimix.core.errors import CheckpointError, ConfigError
from multimix.models.net import ModelConfig, MultiMixNet

FORMAT = "multimix-checkpoint-1"


PAIR_KEY = "pair"


def save_weights(
    path: Path, model: MultiMixNet, pair: str | None = None, shown: Path | None = None
) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "model": json.dumps(model.cfg.to_dict())}
    if pair is not None:
        meta[PAIR_KEY] = pair
    atomic_write(path, lambda fh: fh.write(save(state, metadata=meta)), shown=shown)


def pair_paths(folder: Path, tag: str) -> tuple[Path, Path]:
    """``(weights, state)`` of checkpoint ``tag`` in ``folder``."""
    return Path(folder) / f"{tag}.safetensors", Path(folder) / f"{tag}.state.pt"


def _pending(path: Path) -> Path:
    return path.parent / f".{path.name}.pending"


def save_pair(folder: Path, tag: str, model: MultiMixNet, state: dict[str, Any]) -> None:
    """Save weights and training state so that ``folder`` always holds a consistent pair.

    The previous pair stays untouched until both new files are complete on disk; a failure
    (e.g. a full disk) leaves it as it was and raises a DataError naming the final file.
    """
    weights, state_path = pair_paths(folder, tag)
    pending_w, pending_s = _pending(weights), _pending(state_path)
    token = secrets.token_hex(8)
    try:
        save_weights(pending_w, model, pair=token, shown=weights)
        save_state(pending_s, {**state, PAIR_KEY: token}, shown=state_path)
    except BaseException:
        for path in (pending_w, pending_s):
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    try:
        os.replace(pending_w, weights)
        os.replace(pending_s, state_path)
    except OSError as exc:
        raise write_error(weights, exc) from None
    _sync_dir(Path(folder))


def recover_pair(folder: Path, tag: str = "last") -> None:
    """Complete or discard a :func:`save_pair` that a crash interrupted.

    New weights already in place with their state still pending: the state is moved in. Both
    halves still pending: they are a complete pair and replace the old one. Anything else
    pending is an unfinished write and is removed.
    """
    weights, state_path = pair_paths(folder, tag)
    pending_w, pending_s = _pending(weights), _pending(state_path)
    if not pending_w.exists() and not pending_s.exists():
        return
    if pending_s.exists():
        token = _state_token(pending_s)
        source = pending_w if pending_w.exists() else weights
        if token is not None and _weights_token(source) == token:
            if source == pending_w:
                os.replace(pending_w, weights)
            os.replace(pending_s, state_path)
            _sync_dir(Path(folder))
            return
    for path in (pending_w, pending_s):
        with contextlib.suppress(OSError):
            path.unlink()


def load_pair(
    folder: Path, tag: str = "last", device: torch.device | str = "cpu"
) -> tuple[MultiMixNet, dict[str, Any]]:
    """Weights and training state of ``tag`` (after :func:`recover_pair`), checked to be one
    pair; checkpoints from before pairs were tagged are accepted as they are."""
    recover_pair(folder, tag)
    weights, state_path = pair_paths(folder, tag)
    model = load_weights(weights, device)
    state = load_state(state_path)
    w, s = _weights_token(weights), state.get(PAIR_KEY)
    if w is not None and s is not None and w != s:
        raise CheckpointError(state_path, f"does not belong to {weights.name} (saved apart)")
    return model, state


def _weights_token(path: Path) -> str | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get(PAIR_KEY)
    except (SafetensorError, OSError, ValueError):
        return None


def _state_token(path: Path) -> str | None:
    try:
        token = torch.load(path, map_location="cpu", weights_only=True).get(PAIR_KEY)
    except Exception:  # a damaged pending file is an unfinished write
        return None
    return token if isinstance(token, str) else None


def _sync_dir(folder: Path) -> None:
    """fsync the folder so the renames themselves survive a power cut (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


def save_state(path: Path, state: dict[str, Any], shown: Path | None = None) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh), shown=shown)


def load_state(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "training state not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or unsafe file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(path, f"unreadable or unsafe training state ({reason})") from None
