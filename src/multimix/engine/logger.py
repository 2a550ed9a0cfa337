"""Training logs: a CSV per kind (train steps, validation) and TensorBoard scalars."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from multimix.core.atomic import atomic_write_text


class CsvLog:
    """Append-only CSV, resumable; a row with new keys widens the header (rewriting once).

    On resume, rows written after the checkpoint being resumed are dropped so that the log
    matches the training that actually continues.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.exists():
            with path.open(newline="") as fh:
                self.columns = next(csv.reader(fh), None)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        """Atomically, so a kill while the header widens never loses the rows before it."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())

    def truncate_after(self, step: int) -> None:
        if self.columns is not None:
            self._rewrite([r for r in self.read() if int(float(r["step"])) <= step])

    def write(self, row: dict[str, object]) -> None:
        new_keys = [k for k in row if k not in (self.columns or [])]
        if new_keys:
            old = self.read()
            self.columns = [*(self.columns or []), *new_keys]
            self._rewrite(old)
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns)
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

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        self.writer = None
        if not enabled:  # ranks other than 0 under torchrun
            return
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
