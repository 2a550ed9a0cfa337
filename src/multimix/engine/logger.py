"""Training logs: a CSV per kind (train steps, validation) and TensorBoard scalars."""

from __future__ import annotations

import csv
from pathlib import Path


class CsvLog:
    """Append-only CSV whose columns are fixed by its first row; resumable.

    On resume, rows written after the checkpoint being resumed are dropped so that the log
    matches the training that actually continues.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.exists():
            with path.open(newline="") as fh:
                reader = csv.reader(fh)
                self.columns = next(reader, None)

    def truncate_after(self, step: int) -> None:
        if not self.path.exists() or self.columns is None:
            return
        with self.path.open(newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(float(r["step"])) <= step]
        with self.path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict[str, object]) -> None:
        new = self.columns is None
        if new:
            self.columns = list(row)
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in self.columns})

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as fh:
            return list(csv.DictReader(fh))


def _fmt(value: object) -> object:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


class TensorBoard:
    """Thin wrapper so a missing or broken TensorBoard never stops training."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(folder))
        except Exception:  # optional: CSV logs carry the same numbers
            self.writer = None

    def scalars(self, prefix: str, values: dict[str, object], step: int) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, int | float):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
