"""One process at a time per run folder.

Two trainings writing one run folder would interleave their checkpoints and logs into a run
that is neither. :func:`run_lock` holds an exclusive ``fcntl.flock`` on ``RUN/.lock`` for the
life of the run and writes the holder's pid in it. The kernel releases the lock whenever the
process ends, however it ends (an exception, SIGKILL, a power cut), so a lock file left by a
dead process is simply taken over: there are no stale locks to clean up by hand.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from multimix.core.errors import ConfigError, printable_path

__all__ = ["LOCK_NAME", "holder", "run_lock"]

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(run: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold the lock on the run folder ``run`` (which must exist) inside the ``with`` block.

    ``enabled=False`` makes it a no-op (ranks other than 0 under torchrun).

    Raises:
        ConfigError: another live process holds the run ("RUN is in use by process PID"), or
            the lock file cannot be created (read-only folder, full disk).
    """
    if not enabled:
        yield
        return
    run = Path(run)
    path = run / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        from multimix.core.writable import os_reason

        raise ConfigError(
            f"{printable_path(run)}: cannot lock the run folder: {os_reason(exc)}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"{printable_path(run)}: cannot lock the run folder: {exc.strerror or exc}"
                ) from None
            pid = _read_pid(fd)
            who = f"process {pid}" if pid else "another process"
            raise ConfigError(
                f"{printable_path(run)} is in use by {who}; wait for it to finish, "
                "or stop it, before starting another training in this folder"
            ) from None
        with contextlib.suppress(OSError):  # the pid is for messages only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder(run: str | Path) -> int | None:
    """The pid of the live process holding ``run``, or None when it is free."""
    path = Path(run) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
