"""The writer's lock: an flock on the journal file itself, and the side file beside it that `status` reads.

The side file (`<journal>.lock`) holds the writer's pid, for people, and the journal's high-water mark: the count of
durable commits the writer has made, written and fsynced after each one. SQLite keeps recent commits in the `-wal`
file; a `-wal` deleted (or a journal restored from a copy) takes committed state with it without a word, and the
mark, kept outside the WAL, is how the next opener notices. A clean close checkpoints everything into the journal
itself and removes the side file, so nothing is left beside the journal and nothing can be lost with a `-wal`.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import JournalError

__all__ = ["SideFile", "lock_journal", "lock_is_held", "read_side_file", "write_side_file", "writer_pid_path"]

LOCK_PATIENCE = 0.1  # a reader's liveness probe holds a shared lock for an instant: a writer waits this long for it


def writer_pid_path(journal_path: Path) -> Path:
    """The side file: the writer's pid (information only, never the lock) and the journal's high-water mark."""
    return journal_path.with_name(journal_path.name + ".lock")


@dataclass(frozen=True)
class SideFile:
    """What the side file says: the last writer's pid, and the durable commits it had made (None: not recorded)."""

    pid: int | None
    mark: int | None


def read_side_file(journal_path: Path) -> SideFile | None:
    """The side file's content, or None when there is none (no writer, or the last one closed cleanly).

    The first line is the pid (all an older animal-sync wrote), the second `mark N`.
    """
    try:
        text = writer_pid_path(journal_path).read_text()
    except OSError:
        return None
    lines = text.split("\n")
    pid = int(lines[0]) if lines[0].strip().isdigit() else None
    mark = None
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        if key == "mark" and value.strip().isdigit():
            mark = int(value)
            break
    return SideFile(pid, mark)


def write_side_file(journal_path: Path, mark: int, *, durable: bool = True) -> None:
    """Record the writer's pid and the journal's mark, fsynced: after a durable commit, so a kill never makes the
    journal look behind its mark (a false alarm), and a lost `-wal` always does.

    Raises OSError: the caller words it.
    """
    fd = os.open(writer_pid_path(journal_path), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = f"{os.getpid()}\nmark {mark}\n".encode()
        os.pwrite(fd, data, 0)  # one small write at offset 0, then the tail of a longer earlier one cut
        os.ftruncate(fd, len(data))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def _recorded_writer(journal_path: Path) -> str:
    side = read_side_file(journal_path)
    return str(side.pid) if side is not None and side.pid is not None else "unknown"


def lock_is_held(fd: int) -> bool:
    """Whether some process holds the writer's lock on the file `fd` is open on (this one's own lock aside).

    A shared lock is tried and let go at once: it is refused exactly while a writer holds its exclusive one, and
    the kernel drops a writer's lock when its process dies, so this never calls a killed writer alive (a pid file
    does, once the pid is reused, e.g. pid 1 in a container).
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no locks on this file system: nothing can be said, so say nothing is certain
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def lock_journal(path: Path) -> int:
    """Flock the journal file itself and return the descriptor that holds the lock, for the writer's lifetime.

    The lock lives on the journal's own inode, so no file a person can delete lets a second writer in, and
    the kernel drops it when the process dies (no stale lock). It is taken before SQLite opens the file: SQLite
    keeps POSIX (fcntl) locks on it, and closing *any* descriptor of the file drops those, so this descriptor
    is opened before the connection and closed only after it (`Journal.close`). flock and POSIX locks are
    separate on Linux, so SQLite and this lock never meet. A refused attempt closes its descriptor at once,
    which is harmless as long as a process holds at most one writer's connection to a journal, as the CLI does.
    A reader's liveness probe (`lock_is_held`) holds a shared lock for an instant, so a refusal is retried for
    up to LOCK_PATIENCE seconds before it is believed.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise JournalError(f"cannot lock journal {path}: {exc.strerror}") from None
    deadline = time.monotonic() + LOCK_PATIENCE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            os.close(fd)
            raise JournalError(
                f"journal {path} is in use by another animal-sync process (pid {_recorded_writer(path)})"
            ) from None
        except OSError as exc:  # no locks on this file system
            os.close(fd)
            raise JournalError(f"cannot lock journal {path}: {exc.strerror}") from None
    return fd
