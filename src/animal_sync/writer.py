"""Which process holds a journal for writing, read from the pid file a writer leaves beside it, never locked here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .journal import writer_pid_path

__all__ = ["WriterProcess", "writer_process"]


@dataclass(frozen=True)
class WriterProcess:
    """The pid a writer left beside the journal, and whether that process is alive on this machine."""

    pid: int | None
    alive: bool


def writer_process(journal_path: Path) -> WriterProcess:
    """Which process holds the journal for writing, and whether it is alive on this machine.

    Reads the pid a writer leaves beside the journal (`writer_pid_path`); the file is never locked
    or created here, so a watcher cannot get in a writer's way. A pid from another host or container
    cannot be checked and counts as alive: "gone" is only said when it is certain.
    """
    try:
        text = writer_pid_path(journal_path).read_text().strip()
    except OSError:
        return WriterProcess(None, False)  # no writer ever locked this journal
    if not text.isdigit():
        return WriterProcess(None, False)
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return WriterProcess(pid, False)
    except PermissionError:
        pass  # someone else's live process
    return WriterProcess(pid, True)
