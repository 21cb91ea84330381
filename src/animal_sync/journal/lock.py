"""The writer's lock: an flock on the journal file itself, and the pid file beside it that `status` reads."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import JournalError

__all__ = ["lock_journal", "writer_pid_path"]


def writer_pid_path(journal_path: Path) -> Path:
    """The side file where the writer leaves its pid for `status` to show: information only, never the lock."""
    return journal_path.with_name(journal_path.name + ".lock")


def _recorded_writer(journal_path: Path) -> str:
    try:
        return writer_pid_path(journal_path).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def lock_journal(path: Path) -> int:
    """Flock the journal file itself and return the descriptor that holds the lock, for the writer's lifetime.

    The lock lives on the journal's own inode, so no file a person can delete lets a second writer in, and
    the kernel drops it when the process dies (no stale lock). It is taken before SQLite opens the file: SQLite
    keeps POSIX (fcntl) locks on it, and closing *any* descriptor of the file drops those, so this descriptor
    is opened before the connection and closed only after it (`Journal.close`). flock and POSIX locks are
    separate on Linux, so SQLite and this lock never meet. A refused attempt closes its descriptor at once,
    which is harmless as long as a process holds at most one writer's connection to a journal, as the CLI does.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise JournalError(f"cannot lock journal {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(
            f"journal {path} is in use by another animal-sync process (pid {_recorded_writer(path)})"
        ) from None
    except OSError as exc:  # no locks on this file system
        os.close(fd)
        raise JournalError(f"cannot lock journal {path}: {exc.strerror}") from None
    pid_path = writer_pid_path(path)
    try:
        pid_path.write_text(str(os.getpid()))
    except OSError as exc:  # e.g. a pid file another user left, in a directory shared by group
        os.close(fd)
        raise JournalError(f"cannot lock journal {path}: {pid_path}: {exc.strerror}") from None
    return fd

