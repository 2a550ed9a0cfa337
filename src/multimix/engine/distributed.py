"""Training on several processes with PyTorch's own DistributedDataParallel (launched by torchrun).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op, so the
single-process path is unchanged. Each rank draws its own shard of every stream, gradients are
averaged by DDP, rank 0 alone validates, logs and writes checkpoints, and the few numbers every
rank must agree on (losses for the log, elapsed time for the budget) are reduced across ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from multimix.core.errors import ConfigError
from multimix.engine.runtime import select_device


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device_name: str) -> tuple[World, torch.device]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPU) and pick the device."""
    world = World(
        rank=int(os.environ.get("RANK", 0)),
        size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )
    device = select_device(device_name)
    if not world.distributed:
        return world, device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend=backend)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"could not join the torchrun process group ({first})") from None
    return world, device


def shutdown(barrier: bool = False) -> None:
    """Leave the process group; ``barrier`` (after a finished run) first waits for every rank,
    so none tears down its connections while another still uses them."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


class StepModule(nn.Module):
    """Lets DDP see a method's whole loss as one forward, whatever parts of the net it uses."""

    def __init__(self, model: nn.Module, extra: nn.Module | None = None) -> None:
        super().__init__()
        self.model = model
        self.extra = extra  # the method's own trainable modules, synchronised with the net

    def forward(
        self, method: Any, batch: Any, step: int = 0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return method.loss(self.model, batch, step)


def wrap(
    model: nn.Module, world: World, device: torch.device, extra: nn.Module | None = None
) -> nn.Module | None:
    """A DDP wrapper for the loss, or None on a single process.

    ``find_unused_parameters`` because a method may leave a head unused (``enc`` never runs the
    decoder) and the pre-training phase trains the segmentation path only.
    """
    if not world.distributed:
        return None
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        StepModule(model, extra), device_ids=ids, find_unused_parameters=True
    )


def mean(values: dict[str, float], world: World, device: torch.device) -> dict[str, float]:
    """Average named numbers over the ranks (every rank gets the result)."""
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / world.size for k, v in zip(keys, t.tolist(), strict=True)}


def gather(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out
