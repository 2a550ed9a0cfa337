"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""

from __future__ import annotations

from pathlib import Path


class MultimixError(Exception):
    """Base class: a problem with the user's input, not a bug."""


class DataError(MultimixError):
    """A data file or folder that cannot be used; the message always names it."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class ConfigError(MultimixError):
    """Options that contradict each other or name something that does not exist."""


class CheckpointError(MultimixError):
    """A checkpoint or run folder that is missing, truncated, tampered with or foreign."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")
