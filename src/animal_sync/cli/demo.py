"""`animal-sync demo`: the whole job against the bundled simulator, audited, with the simulator's own verdict.

The simulator runs in its own process, as the real API would, so the demo shows real concurrency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from ..reports.audit import audit
from ..config import Settings
from ..journal import Journal
from ..engine.pipeline import start_run
from ..simulator import SimulatorProcess, check_animal_count, exactly_once
from .render import render_audit
from .suggest import command

__all__ = ["run_demo"]


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
    for suffix in ("", "-wal", "-shm", ".lock"):  # a fresh journal: nothing of an earlier demo stays beside it
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
    echo(f"journal: {journal} (try {command('status', journal=journal)})")
    return 0 if report.ok and clean else 1
