"""Images, masks and labels decoded once into compact tensors.

Chest X-ray sets that fit a laptop fit in memory at training size (3,000 images at 128x128 are
49 MB as uint8), and decoding once keeps the training step from ever waiting on a disk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from multimix.core.errors import DataError
from multimix.core.progress import progress_bar
from multimix.data.bad_inputs import BadInputs, handle
from multimix.data.io import read_image, read_mask, resize_mask, stored_image
from multimix.data.labels import LabelSpace
from multimix.data.sources import Record


@dataclass
class Bank:
    """Row i of every tensor belongs to ``records[i]``."""

    images: torch.Tensor  # uint8 (N, 1, S, S)
    masks: torch.Tensor  # uint8 (N, K, S, S), 0/1
    known: torch.Tensor  # bool (N, K): which structures have a mask
    # The task's targets: long (N,) class indices, or (N, F) finding codes; ``labeled`` says
    # which rows carry one (the others hold the label space's ``blank``).
    targets: torch.Tensor
    labeled: torch.Tensor  # bool (N,)
    records: list[Record]
    structures: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.records)

    def index(self) -> dict[tuple[str, str], int]:
        return {(r.source, r.name): i for i, r in enumerate(self.records)}

    def float_images(self, rows: torch.Tensor) -> torch.Tensor:
        return self.images[rows].float().div_(255.0)

    def subset(self, rows: torch.Tensor) -> Bank:
        """A new bank of ``rows`` (copied), in that order."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return Bank(
            self.images[rows],
            self.masks[rows],
            self.known[rows],
            self.targets[rows],
            self.labeled[rows],
            [self.records[i] for i in rows.tolist()],
            self.structures,
        )


def load_bank(
    records: list[Record],
    size: int,
    structures: tuple[str, ...],
    labels: LabelSpace | None,
    description: str = "loading images",
    bad: BadInputs | None = None,
) -> Bank:
    """Decode, validate and resize ``records``; raises DataError naming the first bad file.

    With ``bad`` under the ``skip`` policy a record whose label, image or any of its masks is
    bad is left out (recorded in ``bad``), so the bank holds only records that are whole.
    """
    n, k = len(records), len(structures)
    images = torch.zeros((n, 1, size, size), dtype=torch.uint8)
    masks = torch.zeros((n, k, size, size), dtype=torch.uint8)
    known = torch.zeros((n, k), dtype=torch.bool)
    shape, blank = (labels.target_shape, labels.blank) if labels is not None else ((), -1)
    targets = torch.full((n, *shape), blank, dtype=torch.long)
    labeled = torch.zeros(n, dtype=torch.bool)
    kept: list[Record] = []
    with progress_bar(description, total=n) as advance:
        for rec in records:
            i = len(kept)
            try:
                if labels is not None and rec.label is not None:
                    targets[i] = torch.as_tensor(labels.encode(rec.label, rec.image))
                    labeled[i] = True
                raw = read_image(rec.image)
                images[i, 0] = torch.from_numpy(stored_image(raw, size))
                known[i], masks[i] = False, 0  # the row may hold a left-out record's masks
                for j, structure in enumerate(structures):
                    path = rec.masks.get(structure)
                    if path is not None:
                        mask = read_mask(path, shape=raw.shape)
                        masks[i, j] = torch.from_numpy(resize_mask(mask, size).astype(np.uint8))
                        known[i, j] = True
            except DataError as error:
                handle(bad, error)  # raises unless skipping; the row is then reused
                targets[i], labeled[i] = blank, False
            else:
                kept.append(rec)
            advance()
    bank = Bank(images, masks, known, targets, labeled, kept, tuple(structures))
    return bank if len(kept) == n else bank.subset(torch.arange(len(kept)))
