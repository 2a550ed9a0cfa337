"""Simulated file-system failures: a read-only folder (even for root) and a full disk."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest


def make_read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``folder`` refuse new files: chmod for a normal user; for root, whom permission
    bits never stop, ``os.open``/``os.mkdir`` under it fail with EROFS as on a read-only mount."""
    folder = Path(folder).resolve()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return

    def inside(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(folder)
        except (TypeError, ValueError):
            return False

    real_open, real_mkdir = os.open, os.mkdir

    def fake_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def disk_full(monkeypatch: pytest.MonkeyPatch, after_bytes: int = 0) -> None:
    """Every write through :mod:`multimix.core.atomic` fails with ENOSPC (at fsync, as a full
    disk often shows itself), naming the hidden temp file as the OS does."""
    import multimix.core.atomic as atomic

    def fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else "?"
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
