"""Check, before any long work starts, that a command can write where it was asked to.

A run that trains for an hour and then cannot save, or an evaluation that fails on its last
line because ``--out`` names a folder, wastes the user's time. Each command calls
:func:`check_writable_dir` or :func:`check_writable_file` on its output first; both raise a
one-line :class:`~multimix.core.errors.ConfigError` naming the user's path (never a temp file).

Writability is tested by creating (and removing) a small probe file in the folder, or in its
nearest existing ancestor when the folder does not exist yet, so a read-only file system or a
full disk is caught even when running as root (for whom permission bits never say no).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from multimix.core.errors import ConfigError, printable_path

__all__ = ["check_writable_dir", "check_writable_file", "os_reason"]

_REASONS = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENAMETOOLONG: "file name too long",
}


def os_reason(exc: OSError) -> str:
    """A short, one-line reason for an OSError, without the (temp) file name it carries."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    text = exc.strerror or str(exc) or type(exc).__name__
    return " ".join(text.split()).lower()


def check_writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Raise ConfigError unless ``path`` is (or can be created as) a folder we can write in.

    Nothing is created: a folder that does not exist yet is checked through its nearest
    existing ancestor.
    """
    path = Path(path)
    shown = printable_path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {shown}: is a file, not a folder; give a folder")
    _probe(_existing_dir(path, option, shown), option, shown)
    return path


def check_writable_file(
    path: str | Path, option: str = "--out", example: str = "metrics.json"
) -> Path:
    """Raise ConfigError unless the file ``path`` can be (over)written."""
    path = Path(path)
    shown = printable_path(path)
    if path.is_dir():
        raise ConfigError(
            f"{option} {shown}: is a folder; give a file name, e.g. "
            f"{printable_path(path / example)}"
        )
    if path.exists() and not os.access(path, os.W_OK) and os.geteuid() != 0:
        raise ConfigError(f"{option} {shown}: cannot write (permission denied)")
    _probe(_existing_dir(path.parent, option, shown), option, shown)
    return path


def _existing_dir(path: Path, option: str, shown: str) -> Path:
    """``path`` or its nearest existing ancestor, which must be a folder."""
    current = path.absolute()
    while not current.exists():
        if current.parent == current:
            break
        current = current.parent
    if not current.is_dir():
        raise ConfigError(
            f"{option} {shown}: cannot be created, {printable_path(current)} is a file"
        )
    return current


def _probe(folder: Path, option: str, shown: str) -> None:
    probe = folder / f".multimix-write-test.{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        where = "" if str(folder) == str(Path(shown).absolute()) else f" (in {folder})"
        raise ConfigError(f"{option} {shown}: cannot write here{where}: {os_reason(exc)}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
