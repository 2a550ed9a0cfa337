"""Errors a user can act on. The CLI prints them as one line, never as a traceback."""

from __future__ import annotations

import os
from pathlib import Path


class MultimixError(Exception):
    """Base class: a problem with the user's input, not a bug."""


class DataError(MultimixError):
    """A data file or folder that cannot be used; the message always names it."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = printable_path(path)
        self.reason = message
        super().__init__(f"{self.path}: {message}")


def printable_path(path: str | Path) -> str:
    """``path`` as text that can always be printed or written as UTF-8.

    A file name holding bytes that are not UTF-8 reaches Python with lone surrogates, which
    crash any UTF-8 write; they are shown as ``\\xNN`` escapes instead.
    """
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    return text


class ConfigError(MultimixError):
    """Options that contradict each other or name something that does not exist."""


class CheckpointError(MultimixError):
    """A checkpoint or run folder that is missing, truncated, tampered with or foreign."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")
