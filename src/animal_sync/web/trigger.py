"""`POST /runs`: start or resume a run as a child process, under the CLI's own rules.

The child is `python -m animal_sync resume --journal J` when the journal holds a run, and `run --journal J` only
when it holds none: a finished journal is never synced again in full by accident (`resume` of a finished run with
nothing left says so and writes nothing), and starting over (`run --abandon`) stays a person's act at a terminal.
One writer: the child takes the journal's lock like any CLI run, so a second trigger, or a run started from a
shell, is refused by the lock itself; the child's one line says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ..errors import JournalError
from ..journal import Journal, RunState, runs
from ..reports.status import writer_process

__all__ = ["EARLY_SECONDS", "Child", "Launch", "Trigger"]

EARLY_SECONDS = 1.5  # a child that exits this soon was refused (lock held, nothing to resume): report its words
TOKEN_VARIABLE = "ANIMAL_SYNC_SERVE_TOKEN"  # never passed on to the child


@dataclass(frozen=True)
class Child:
    """A run the trigger started: its command, pid, and once it exited, its code and last words."""

    journal: str
    command: tuple[str, ...]
    pid: int
    started_at: float
    exit_code: int | None
    last_lines: tuple[str, ...]


@dataclass(frozen=True)
class Launch:
    """What one `POST /runs` did for one journal: started a child, or why not."""

    journal: str
    started: bool
    child: Child | None
    refused: str | None


class _Running:
    def __init__(self, journal: str, command: list[str], log: Path) -> None:
        self.journal, self.command, self.log = journal, tuple(command), log
        env = {name: value for name, value in os.environ.items() if name != TOKEN_VARIABLE}
        env.setdefault("ANIMAL_SYNC_LOG_FORMAT", "json")
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.started_at = time.time()

    def tail(self, lines: int = 5) -> tuple[str, ...]:
        try:
            with open(self.log, "rb") as text:
                return tuple(line.decode("utf-8", "replace").rstrip() for line in deque(text, lines))
        except OSError:
            return ()

    def snapshot(self) -> Child:
        return Child(self.journal, self.command, self.process.pid, self.started_at, self.process.poll(), self.tail())


class Trigger:
    """Starts runs as child processes, one per journal at a time, and remembers the last one of each."""

    def __init__(self, journals: list[str], *, base_url: str | None = None) -> None:
        self.journals = journals
        self.base_url = base_url
        self._lock = threading.Lock()
        self._children: dict[str, _Running] = {}
        self._logs = Path(tempfile.mkdtemp(prefix="animal-sync-serve-"))

    def command(self, journal: str) -> list[str]:
        """resume when the journal holds a run, run when it holds none (nor exists yet)."""
        verb = "run"
        if Path(journal).exists():
            try:
                with Journal.open(journal, readonly=True) as opened:
                    verb = "resume" if runs(opened) else "run"
            except JournalError:
                verb = "resume"  # let the CLI say what is wrong with it, in its own words
        command = [sys.executable, "-m", "animal_sync", verb, "--journal", journal]
        if verb == "run" and self.base_url:
            command += ["--base-url", self.base_url]
        return command

    def _writer(self, journal: str) -> str | None:
        """Why not to start: the journal's run is running and the writer it names is alive. The lock decides in the
        end (the child takes it or says why not); this spares a child that could only be refused."""
        if not Path(journal).exists():
            return None
        try:
            with Journal.open(journal, readonly=True) as opened:
                history, writer = runs(opened), writer_process(opened)
        except JournalError:
            return None
        if history and history[0].state is RunState.RUNNING and writer.alive:
            return f"run {history[0].id} of {journal} is running (pid {writer.pid}): one writer at a time"
        return None

    def start(self) -> list[Launch]:
        """Start a child for each journal that has none running; wait briefly so a refusal is reported, not lost."""
        launches: list[Launch] = []
        started: list[_Running] = []
        with self._lock:
            for index, journal in enumerate(self.journals):
                running = self._children.get(journal)
                if running is not None and running.process.poll() is None:
                    launches.append(Launch(journal, False, running.snapshot(), f"run already started here (pid {running.process.pid})"))
                    continue
                busy = self._writer(journal)
                if busy is not None:
                    launches.append(Launch(journal, False, None, busy))
                    continue
                child = _Running(journal, self.command(journal), self._logs / f"child-{index}.log")
                self._children[journal] = child
                started.append(child)
        deadline = time.monotonic() + EARLY_SECONDS
        for child in started:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in started:
            seen = child.snapshot()
            refused = None
            if seen.exit_code == 2:  # the CLI's usage and journal errors, the lock refused among them: one line
                refused = next((line for line in reversed(seen.last_lines) if line), "exited with code 2")
            launches.append(Launch(child.journal, refused is None, seen, refused))
        return launches

    def children(self) -> list[Child]:
        with self._lock:
            return [child.snapshot() for child in self._children.values()]

    def close(self, wait: float = 30.0) -> None:
        """Stop the children still running as Ctrl-C would (SIGTERM: the POSTs in flight finish, the journal stays
        consistent, `resume` continues), so no run outlives the page that started it unseen."""
        with self._lock:
            alive = [child.process for child in self._children.values() if child.process.poll() is None]
        for process in alive:
            process.terminate()
        for process in alive:
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
