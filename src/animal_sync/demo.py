"""`animal-sync demo`: the whole job against the bundled simulator, audited, with the simulator's own verdict.

The simulator runs in its own process, as the real API would, so the demo shows real concurrency.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import SimulatorError
from .journal import Journal
from .pipeline import start_run
from .audit import audit
from .render import render_audit
from .simulator import check_animal_count, exactly_once

__all__ = ["SimulatorProcess", "run_demo"]

_BANNER = "Animals API simulator on "


class SimulatorProcess:
    """`animal-sync simulate` in a child process on a free loopback port; a context manager.

    The child binds port 0 and names the port it got in its first line, so no other process can take the
    port between choosing and binding it.
    """

    def __init__(self, *args: str) -> None:
        self.args = ["--port", "0", *args]
        self.url = ""
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> SimulatorProcess:
        command = [sys.executable, "-m", "animal_sync", "simulate", *self.args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        # "Animals API simulator on http://127.0.0.1:PORT: N animals, ...", printed once it listens
        ready, _, _ = select.select([self.process.stdout], [], [], 15)
        line = self.process.stdout.readline() if ready else ""
        if line.startswith(_BANNER):
            self.url = line.removeprefix(_BANNER).split(": ", 1)[0]
            return self
        self.__exit__()
        if ready:
            raise SimulatorError(f"the simulator exited at start with code {self.process.returncode}")
        raise SimulatorError("the simulator did not answer within 15 s")

    def verify(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_verify", timeout=10) as answer:
            return json.load(answer)

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def run_demo(
    journal: Path,
    *,
    animals: int | None,
    chaos: float,
    echo: Callable[[str], None],
    progress: Callable[[], AbstractContextManager[Any]] | None = None,
) -> int:
    """Run, audit and verify; 0 only when the audit is clean and the simulator saw each animal exactly once.

    `progress` makes the context that yields the run's `on_progress` callback (bars, log events, or None).
    """
    if animals is not None:
        check_animal_count(animals)  # here, in one line, rather than as the child simulator's dying words
    for suffix in ("", "-wal", "-shm"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)
    extra = ["--animals", str(animals)] if animals is not None else []
    with SimulatorProcess("--strict", "--chaos", str(chaos), *extra) as simulator:
        echo(f"simulator: {simulator.url} (strict verification, chaos {chaos}%, real 5-15 s stalls)")
        started = time.monotonic()
        with progress() if progress else nullcontext() as on_progress:
            result = start_run(Settings(base_url=simulator.url, journal=journal), on_progress=on_progress)
        echo(f"run {result.run_id} {result.state} in {time.monotonic() - started:.1f} s: {result.message}")
        with Journal.open(journal, readonly=True) as opened:
            report = audit(opened)
        echo(render_audit(report))
        verdict = simulator.verify()
    clean = exactly_once(verdict)
    echo(
        f"simulator's verdict: {verdict['delivered']} of {verdict['animals']} animals delivered, "
        f"{verdict['missing']} missing, {verdict['duplicates_rejected']} duplicates refused, "
        f"{verdict['content_mismatches']} records with wrong content"
    )
    echo(f"journal: {journal} (try `animal-sync status --journal {journal}`)")
    return 0 if report.ok and clean else 1
