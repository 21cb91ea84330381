"""Which process holds a journal for writing: liveness from the writer's lock, the pid only for people."""

from __future__ import annotations

from dataclasses import dataclass

from ..journal import Journal, read_side_file

__all__ = ["WriterProcess", "writer_process"]


@dataclass(frozen=True)
class WriterProcess:
    """The pid a writer left beside the journal, and whether a writer holds the journal's lock now."""

    pid: int | None
    alive: bool


def writer_process(journal: Journal) -> WriterProcess:
    """Which process holds the journal for writing, and whether it is alive.

    Liveness is the writer's lock itself (an flock on the journal file, dropped by the kernel when its process
    dies), never the pid left beside the journal: a pid is reused (pid 1 in a container always exists) and says
    nothing about a writer killed long ago. The pid is shown for people only. The probe holds a shared lock for
    an instant and creates nothing, so a watcher never gets in a writer's way.
    """
    side = read_side_file(journal.path)
    return WriterProcess(side.pid if side is not None else None, journal.writer_alive())
