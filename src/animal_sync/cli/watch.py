"""`status --watch`: follow a run from another terminal, reading the journal it writes, until the run ends.

The journal is opened read-only; WAL lets a reader see each step the writer commits without blocking it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from ..journal import Journal, RunState
from ..reports.status import status
from .render import status_hints, status_line, status_table

__all__ = ["watch_status"]


def watch_status(
    journal_path: Path,
    *,
    interval: float = 2.0,
    run_id: int | None = None,
    console: Console | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Redraw the status every `interval` seconds while the run is `running`.

    On a terminal the table is redrawn in place; anywhere else one line is printed per interval and the
    full table once at the end. Returns 0 once the run is no longer running (its outcome is `audit`'s
    business), 1 if it is `running` in the journal but no live process runs it (it was killed).
    """
    console = console or Console()
    live_table = console.is_terminal and not console.is_dumb_terminal
    with Journal.open(journal_path, readonly=True) as journal:
        live: Any = Live(console=console, auto_refresh=False) if live_table else nullcontext()
        with live:
            while True:
                report = status(journal, run_id)
                running = report.state == RunState.RUNNING
                gone = running and report.process is not None and not report.process.alive
                if live_table:
                    table = status_table(report)
                    if running and not gone:
                        table.caption = f"following the journal every {interval:g} s; Ctrl-C stops watching"
                    live.update(table, refresh=True)
                elif running and not gone:
                    console.print(status_line(report), soft_wrap=True)
                if not running or gone:
                    break
                sleep(interval)
    if not live_table:
        console.print(status_table(report))
    for line in status_hints(report):
        console.print(line, soft_wrap=True)
    return 1 if gone else 0
