"""One progress bar for every long loop; quiet when output is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: float | None) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``; shows a live bar on a terminal, nothing in CI logs."""
    if not sys.stderr.isatty():
        yield lambda *a, **k: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n: float = 1, info: str | None = None, completed: float | None = None) -> None:
            if completed is not None:
                progress.update(task, completed=completed)
            else:
                progress.advance(task, n)
            if info is not None:
                progress.update(task, info=info)

        yield advance
