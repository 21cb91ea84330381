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

if TYPE_CHECKING:
    from rich.console import Console

    from .bars import ProgressBars
    from ..engine.pipeline import Progress

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


def choose_mode(mode: ProgressMode, *, quiet: bool, console: Console | None = None) -> ProgressMode:
    """Resolve AUTO: `--quiet` silences progress, a real terminal gets bars, cron/CI/pipes/Kubernetes get events.

    Only AUTO without --quiet asks a terminal (a Rich console on stderr unless given): a quiet or logged run never
    loads the bars.
    """
    if mode is not ProgressMode.AUTO:
        return mode
    if quiet:
        return ProgressMode.OFF
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
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
        from .bars import ProgressBars  # Rich's live display loads only when there are bars to draw

        with ProgressBars(console, limit=limit) as bars:
            yield bars
    elif mode is ProgressMode.LOG:
        with closing(ProgressLog(every, limit=limit)) as events:
            yield events
    else:
        yield None


def __getattr__(name: str) -> object:
    """`ProgressBars` lives in bars.py (Rich); it is still importable from here without loading Rich up front."""
    if name == "ProgressBars":
        from .bars import ProgressBars

        return ProgressBars
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
