"""`animal-sync demo`: the whole job against the bundled simulator, audited, with the simulator's own verdict.

The simulator runs in its own process, as the real API would, so the demo shows real concurrency.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager, closing, nullcontext
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import SimulatorError
from .journal import Journal
from .pipeline import start_run
from .report import audit, render_audit

__all__ = ["SimulatorProcess", "run_demo"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SimulatorProcess:
    """`animal-sync simulate` in a child process on a free loopback port; a context manager."""

    def __init__(self, *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = ["--port", str(self.port), *args]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SimulatorProcess:
        command = [sys.executable, "-m", "animal_sync", "simulate"]
        self.process = subprocess.Popen([*command, *self.args], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SimulatorError(f"the simulator exited at start with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise SimulatorError("the simulator did not answer within 15 s")

    def verify(self) -> dict:
        with urllib.request.urlopen(self.url + "/_verify", timeout=10) as answer:
            return json.load(answer)

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


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
    for suffix in ("", "-wal", "-shm"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)
    extra = ["--animals", str(animals)] if animals is not None else []
    with SimulatorProcess("--strict", "--chaos", str(chaos), *extra) as simulator:
        echo(f"simulator: {simulator.url} (strict verification, chaos {chaos}%, real 5-15 s stalls)")
        started = time.monotonic()
        with progress() if progress else nullcontext() as on_progress:
            result = start_run(Settings(base_url=simulator.url, journal=journal), on_progress=on_progress)
        echo(f"run {result.run_id} {result.state} in {time.monotonic() - started:.1f} s: {result.message}")
        with closing(Journal.open(journal, readonly=True)) as opened:
            report = audit(opened)
        echo(render_audit(report))
        verdict = simulator.verify()
    clean = verdict["missing"] == 0 and verdict["duplicates_rejected"] == 0 and verdict["content_mismatches"] == 0
    echo(
        f"simulator's verdict: {verdict['delivered']} of {verdict['animals']} animals delivered, "
        f"{verdict['missing']} missing, {verdict['duplicates_rejected']} duplicates refused, "
        f"{verdict['content_mismatches']} records with wrong content"
    )
    echo(f"journal: {journal} (try `animal-sync status --journal {journal}`)")
    return 0 if report["ok"] and clean else 1
