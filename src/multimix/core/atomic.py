"""Write files so that a crash never leaves a half-written one behind.

The data go to a hidden, randomly named sibling (same filesystem, so the final ``os.replace``
is atomic; hidden, so folder scans ignore it; created with the usual umask permissions, unlike
``mkstemp``), are flushed to disk, and only then take the final name.

A failed write (full disk, read-only file system, a folder where the file should be) is a
one-line :class:`~multimix.core.errors.DataError` naming the file the user asked for, never
the hidden temporary file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from multimix.core.errors import DataError


def atomic_write(
    path: str | Path, write: Callable[[BinaryIO], None], shown: str | Path | None = None
) -> None:
    """Call ``write(fh)`` on a temporary file, fsync it, then rename it to ``path``.

    ``shown`` is the path named in the error message (default ``path``), for callers that
    write to an intermediate name themselves.

    Raises:
        DataError: the file cannot be written (any OSError, e.g. a full disk).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise write_error(shown or path, exc) from None
        raise


def write_error(path: str | Path, exc: OSError) -> DataError:
    """The one-line error for a failed write of ``path``."""
    from multimix.core.writable import os_reason

    if Path(path).is_dir():
        return DataError(path, "cannot write: it is a folder, not a file")
    return DataError(path, f"cannot write: {os_reason(exc)}")


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
