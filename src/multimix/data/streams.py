"""What a method consumes per step: seeded, resumable batches drawn from index pools.

Each pool walks a fresh seeded permutation per epoch; its position is two integers, so a resumed
run draws exactly the batches the uninterrupted run would have drawn. Under distributed training
each rank walks its own shard of every permutation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from multimix.data.augment import AugmentConfig, strong, weak
from multimix.data.bank import Bank
from multimix.methods.base import CLS, SEG, SEG_UNLABELED, UNLABELED, Batch


def _seed(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class Pool:
    """An endless, seeded, resumable sampler over a fixed list of bank rows."""

    name: str
    rows: torch.Tensor
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1
    epoch: int = 0
    pos: int = 0
    _order: torch.Tensor | None = field(default=None, repr=False)

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None:
            gen = torch.Generator().manual_seed(_seed(self.seed, self.name, self.epoch))
            perm = torch.randperm(len(self.rows), generator=gen)
            # Equal shards (the remainder is dropped this epoch), so every rank's position is
            # the same two integers and one rank's saved position is valid for all.
            usable = len(perm) - len(perm) % self.world if len(perm) >= self.world else len(perm)
            shard = perm[:usable][self.rank :: self.world]
            self._order = self.rows[shard if len(shard) else perm]
        return self._order

    def next(self) -> torch.Tensor:
        out = []
        need = self.batch_size
        while need:
            order = self._epoch_order()
            take = order[self.pos : self.pos + need]
            out.append(take)
            need -= len(take)
            self.pos += len(take)
            if self.pos >= len(order):
                self.epoch, self.pos, self._order = self.epoch + 1, 0, None
        return torch.cat(out)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos, self._order = int(state["epoch"]), int(state["pos"]), None


class Streams:
    """Draws the streams a method asks for and augments them (weak/strong) in whole batches."""

    def __init__(
        self,
        bank: Bank,
        pools: dict[str, Pool],
        augment: AugmentConfig,
        seed: int,
        rank: int = 0,
    ) -> None:
        self.bank = bank
        self.pools = pools
        self.augment = augment
        # Each rank augments differently; rank 0 draws exactly what a single process draws.
        parts = (seed, "augment") if rank == 0 else (seed, "augment", rank)
        self.generator = torch.Generator().manual_seed(_seed(*parts))

    def draw(self, streams: tuple[str, ...]) -> Batch:
        bank, cfg, gen = self.bank, self.augment, self.generator
        batch = Batch()
        if SEG in streams:
            rows = self.pools[SEG].next()
            batch.seg_x, masks = weak(bank.float_images(rows), bank.masks[rows].float(), gen, cfg)
            batch.seg_y, batch.seg_known = masks, bank.known[rows]
        if SEG_UNLABELED in streams:
            rows = self.pools[SEG_UNLABELED].next()
            batch.seg_unlabeled_x, _ = weak(bank.float_images(rows), None, gen, cfg)
        if CLS in streams:
            rows = self.pools[CLS].next()
            batch.cls_x, _ = weak(bank.float_images(rows), None, gen, cfg)
            batch.cls_y = bank.targets[rows]
        if UNLABELED in streams:
            images = bank.float_images(self.pools[UNLABELED].next())
            batch.weak_x, _ = weak(images, None, gen, cfg)
            batch.strong_x, _ = strong(images, None, gen, cfg)
        return batch

    def state_dict(self) -> dict:
        return {
            "pools": {n: p.state_dict() for n, p in self.pools.items()},
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for name, pool_state in state["pools"].items():
            if name in self.pools:
                self.pools[name].load_state_dict(pool_state)
        self.generator.set_state(state["generator"])
