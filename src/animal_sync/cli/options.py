"""The options several commands share, worded once, and the progress display they switch on."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..logs import LogFormat
from .progress import OnProgress, ProgressMode

__all__ = [
    "HoldOpt",
    "JournalOpt",
    "JournalsOpt",
    "JsonOpt",
    "LogFormatOpt",
    "ProgressEveryOpt",
    "ProgressOpt",
    "QuietOpt",
    "RunOpt",
    "progress_reporter",
]

JournalOpt = Annotated[Path, typer.Option("--journal", envvar="ANIMAL_SYNC_JOURNAL", help="The SQLite journal file.")]
JournalsOpt = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--journal", envvar="ANIMAL_SYNC_JOURNAL", show_default=False, metavar="<path>",
        help="The SQLite journal file (default: animal-sync.db); repeat it to report on the union of shard journals.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
RunOpt = Annotated[Optional[int], typer.Option("--run", help="Report on this run id instead of the last one.")]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option("--log-format", envvar="ANIMAL_SYNC_LOG_FORMAT", help="auto: console on a terminal, JSON lines otherwise."),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", envvar="ANIMAL_SYNC_QUIET", help="Log warnings and errors only, and show no progress.")
]
ProgressOpt = Annotated[
    ProgressMode,
    typer.Option(
        "--progress", envvar="ANIMAL_SYNC_PROGRESS",
        help="auto: live bars on a terminal, a `progress` log event every --progress-every seconds otherwise, none with --quiet.",
    ),
]
ProgressEveryOpt = Annotated[
    float,
    typer.Option("--progress-every", min=0.1, envvar="ANIMAL_SYNC_PROGRESS_EVERY", help="Seconds between `progress` log events."),
]
HoldOpt = Annotated[
    bool,
    typer.Option(
        "--hold-in-doubt",
        envvar="ANIMAL_SYNC_HOLD_IN_DOUBT",
        help="Do not re-send batches whose POST outcome is unknown; leave them for a person to decide.",
    ),
]


def progress_reporter(mode: ProgressMode, quiet: bool, every: float, limit: int | None = None) -> AbstractContextManager[OnProgress | None]:
    """The `on_progress` callback to hand the pipeline, live for the length of a `with` block."""
    from .progress import choose_mode, reporting

    console = None
    if mode is ProgressMode.BARS or (mode is ProgressMode.AUTO and not quiet):
        from rich.console import Console  # only bars, or the question whether stderr is a terminal, need Rich

        console = Console(stderr=True)
    chosen = choose_mode(mode, quiet=quiet, console=console)
    return reporting(chosen, console=console, every=every, limit=limit)
