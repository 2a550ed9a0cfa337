"""What to do with a bad input (a file, a CSV row, an empty folder): stop, or leave it out.

Under the default policy ``error`` the first bad input stops the command with its one-line
:class:`~multimix.core.errors.DataError`. Under ``skip`` it is left out and recorded, so that a
long run over a large, slightly dirty data set still starts, and says exactly what it did not
use (``skipped.csv`` in the run folder, ``skipped`` in metrics.json). Either way every input is
checked before the first training step, never hours into a run.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from multimix.core.errors import ConfigError, DataError

POLICIES = ("error", "skip")
SKIPPED_CSV = "skipped.csv"
_SHOWN = 5  # skips printed on the console; the CSV has them all


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ConfigError(f"--on-bad-input must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


@dataclass
class BadInputs:
    """The policy and, under ``skip``, every input left out as ``(file, reason)``."""

    policy: str = "error"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_policy(self.policy)

    @property
    def skipping(self) -> bool:
        return self.policy == "skip"

    def handle(self, error: DataError) -> None:
        """Raise ``error`` (with a hint at ``skip``) under ``error``; record it under ``skip``."""
        if not self.skipping:
            hint = "; or pass --on-bad-input skip to leave bad inputs out"
            raise DataError(error.path, error.reason + hint) from None
        self.skipped.append((error.path, error.reason))

    def __len__(self) -> int:
        return len(self.skipped)

    def as_json(self) -> list[dict[str, str]]:
        return [{"file": f, "reason": r} for f, r in self.skipped]

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "reason"])
        writer.writerows(self.skipped)
        return buffer.getvalue()

    def summary(self, where: str | Path | None = None) -> list[str]:
        """Console lines: the count, where the full list is, and the first few entries."""
        if not self.skipping:
            return []
        listed = f", listed in {where}" if where else ""
        lines = [f"skipped {len(self)} bad input(s) (--on-bad-input skip){listed}"]
        lines += [f"  {f}: {r}" for f, r in self.skipped[:_SHOWN]]
        if len(self) > _SHOWN:
            lines.append(f"  ... and {len(self) - _SHOWN} more")
        return lines


def handle(bad: BadInputs | None, error: DataError) -> None:
    """``bad.handle(error)``; without a policy object (plain library use) just raise."""
    if bad is None:
        raise error
    bad.handle(error)


def write_skipped(bad: BadInputs, run: Path) -> None:
    """Write ``run/skipped.csv`` (header only when nothing was skipped) and print the summary.

    Written under ``skip`` only, and on every start, so a resumed run's list is current.
    """
    if not bad.skipping:
        return
    from multimix.core.atomic import atomic_write_text
    from multimix.core.progress import console

    path = Path(run) / SKIPPED_CSV
    atomic_write_text(path, bad.csv_text())
    for line in bad.summary(path):
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def read_skipped(run: Path) -> list[tuple[str, str]]:
    """The ``(file, reason)`` rows of a run's ``skipped.csv``; none when it has none."""
    path = Path(run) / SKIPPED_CSV
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [(row["file"], row["reason"]) for row in csv.DictReader(fh)]
