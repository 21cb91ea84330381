"""Progress for whoever is there: live bars on a terminal, a periodic `progress` log event anywhere else.

The pipeline only calls `on_progress(Progress)`; everything about showing it lives here. Figures come
first as plain data (`figures`), then one of two renderings: `ProgressBars` (Rich) or `ProgressLog`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

if TYPE_CHECKING:
    from .pipeline import Progress

__all__ = [
    "DEFAULT_EVERY",
    "OnProgress",
    "ProgressBars",
    "ProgressLog",
    "ProgressMode",
    "choose_mode",
    "expected_animals",
    "figures",
    "reporting",
]

OnProgress = Callable[["Progress"], None]
DEFAULT_EVERY = 10.0  # seconds between two `progress` events when nobody watches a terminal


class ProgressMode(StrEnum):
    AUTO = "auto"  # bars on a terminal, log events otherwise; nothing with --quiet
    BARS = "bars"
    LOG = "log"
    OFF = "off"


def choose_mode(mode: ProgressMode, *, quiet: bool, console: Console) -> ProgressMode:
    """Resolve AUTO: `--quiet` silences progress, a real terminal gets bars, cron/CI/pipes/Kubernetes get events."""
    if mode is not ProgressMode.AUTO:
        return mode
    if quiet:
        return ProgressMode.OFF
    if console.is_terminal and not console.is_dumb_terminal:
        return ProgressMode.BARS
    return ProgressMode.LOG


def expected_animals(progress: Progress, limit: int | None = None) -> int | None:
    """How many animals the run will hold: exact once every page is listed, extrapolated per page before."""
    if limit is not None and progress.discovered >= limit:
        return limit
    total, listed = progress.pages_planned, progress.pages_listed
    if total is None or listed == 0:
        return limit
    estimate = progress.discovered if listed >= total else round(progress.discovered * total / listed)
    estimate = max(estimate, progress.discovered)
    return estimate if limit is None else min(limit, estimate)


def figures(progress: Progress, limit: int | None = None) -> dict[str, int | None]:
    """The live figures as plain data: what bars draw and what `progress` events carry."""
    return {
        "total_pages": progress.total_pages,
        "pages_listed": progress.pages_listed,
        "discovered": progress.discovered,
        "expected": expected_animals(progress, limit),
        "fetched": progress.fetched,
        "posted": progress.posted,
        "unchanged": progress.unchanged,
        "quarantined": progress.quarantined,
        "failed": progress.failed,
        "retries": progress.retries,
    }


# -- off a terminal: one log event every few seconds ----------------------------------------------------------


class ProgressLog:
    """Emits a `progress` event at most every `every` seconds, and a last one (final=True) on close.

    Rates are per second over the interval since the previous event (over the whole attempt for the last
    one), so a resume that starts with thousands already posted does not claim a burst it never made. Its events are always emitted at
    INFO, whatever the log level: whether progress is shown at all is decided by the mode, not by --quiet.
    """

    def __init__(
        self,
        every: float = DEFAULT_EVERY,
        *,
        limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self.limit = limit
        self.clock = clock
        self._log: Any = None
        self._first: tuple[float, int, int] | None = None  # (when, fetched, posted) at the first figures
        self._last: tuple[float, int, int] | None = None  # ... and at the previous event
        self._latest: Progress | None = None

    def _logger(self, progress: Progress) -> Any:
        if self._log is None:
            self._log = structlog.wrap_logger(
                None, wrapper_class=structlog.make_filtering_bound_logger(logging.INFO)
            ).bind(run_id=progress.run_id)
        return self._log

    def __call__(self, progress: Progress) -> None:
        self._latest = progress
        now = self.clock()
        if self._last is None:
            self._first = self._last = (now, progress.fetched, progress.posted)
        elif now - self._last[0] >= self.every:
            self._emit(progress, now, final=False)

    def _emit(self, progress: Progress, now: float, *, final: bool) -> None:
        since = self._first if final else self._last
        assert since is not None
        then, fetched_then, posted_then = since
        seconds = now - then
        data = figures(progress, self.limit)
        post_rate = (progress.posted - posted_then) / seconds if seconds > 0 else None
        fetch_rate = (progress.fetched - fetched_then) / seconds if seconds > 0 else None
        left = None if data["expected"] is None else max(
            0, data["expected"] - progress.posted - progress.unchanged - progress.quarantined - progress.failed
        )
        eta = round(left / post_rate) if left is not None and post_rate else None
        self._logger(progress).info(
            "progress",
            **data,
            fetch_rate=None if fetch_rate is None else round(fetch_rate, 1),
            post_rate=None if post_rate is None else round(post_rate, 1),
            eta_seconds=0 if left == 0 else eta,
            **({"final": True} if final else {}),
        )
        self._last = (now, progress.fetched, progress.posted)

    def close(self) -> None:
        if self._latest is not None and self._last is not None:
            self._emit(self._latest, self.clock(), final=True)


# -- on a terminal: live bars ---------------------------------------------------------------------------------


class RateColumn(ProgressColumn):
    """Items per second, from Rich's own sliding estimate of the task's speed."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


class ProgressBars:
    """Three live bars on stderr (pages listed, animals fetched, animals posted), with rate and ETA.

    While the bars are live, Rich swaps `sys.stderr` for a proxy that prints above them; the loggers from
    `logs.configure_logging` write to whatever `sys.stderr` is per line, so log lines scroll above the bars.
    """

    def __init__(self, console: Console | None = None, *, limit: int | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.limit = limit
        self.bars = RichProgress(
            TextColumn("{task.description:<16}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            RateColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.console,
            expand=True,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressBars:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def __call__(self, progress: Progress) -> None:
        animals = expected_animals(progress, self.limit)
        pages = progress.pages_planned
        if self.limit is not None and progress.discovered >= self.limit:
            pages = progress.pages_listed  # test mode stops listing once it has its animals: that is all of it
        rows = {
            "pages listed": (progress.pages_listed, pages, f"retries {progress.retries}"),
            "animals fetched": (progress.fetched, animals, f"quarantined {progress.quarantined}"),
            # An incremental run's unchanged animals are done without a POST: they fill the bar too, named apart.
            "animals posted": (
                progress.posted + progress.unchanged, animals,
                f"failed {progress.failed}" + (f", unchanged {progress.unchanged}" if progress.unchanged else ""),
            ),
        }
        for name, (done, total, note) in rows.items():
            if name not in self.tasks:
                # Added at the first figures, not at zero: a resume's head start is not counted as speed.
                self.tasks[name] = self.bars.add_task(name, total=total, completed=done, note=note)
            else:
                self.bars.update(self.tasks[name], total=total, completed=done, note=note)


# -- choosing and wiring --------------------------------------------------------------------------------------


@contextmanager
def reporting(
    mode: ProgressMode,
    *,
    console: Console | None = None,
    every: float = DEFAULT_EVERY,
    limit: int | None = None,
) -> Iterator[OnProgress | None]:
    """The `on_progress` callback for a resolved mode (None for OFF), live for the length of the block."""
    if mode is ProgressMode.BARS:
        with ProgressBars(console, limit=limit) as bars:
            yield bars
    elif mode is ProgressMode.LOG:
        with closing(ProgressLog(every, limit=limit)) as events:
            yield events
    else:
        yield None
