"""What the live page shows, as one frozen value: the journals' runs summed, rates and ETA, the exceptions each with
the command that settles it, and the recent transitions. Read from the journals alone, opened read-only per look.

A journal is opened for one look and closed again: no read transaction outlives a second, a writer that restarts
(or a journal that does not exist yet) is simply what the next look sees.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..reports.audit import Audit, audit
from ..errors import JournalError
from ..journal import AnimalState, BatchState, Journal, RunRow, RunState, recent_events, select_run, unsettled_resends
from ..reports.status import Status, plain, status

__all__ = ["Fix", "JournalView", "LogLine", "Overview", "Sampler", "look"]

RATE_WINDOW = 30.0  # seconds of samples a rate is measured over
EVENTS = 50  # transitions the live log shows
NAMED = 20  # batches named one by one among the exceptions
REASON = '"<why you know>"'  # settle needs a person's own reason: the command shows where it goes
FETCHED = (  # an animal whose detail has been fetched, whatever became of it since
    AnimalState.FETCHED, AnimalState.QUARANTINED, AnimalState.BATCHED, AnimalState.POSTED, AnimalState.SETTLED,
    AnimalState.UNCHANGED,
)
DONE = (AnimalState.POSTED, AnimalState.SETTLED, AnimalState.UNCHANGED)
# Audit exceptions no command clears: `audit` names each one, and a person decides.
INSPECT = ("bad_listing_item", "duplicate", "orphan", "mismatch", "unchanged_unproven")
RESUMED = ("unlisted_page", "failed", "quarantined", "missing")  # `resume` lists, fetches or sends them again


@dataclass(frozen=True)
class Fix:
    """An exception of one journal, how many, what it means, and the exact command that settles it."""

    journal: str
    kind: str
    count: int
    what: str
    command: str


@dataclass(frozen=True)
class LogLine:
    """One journal transition for the live log."""

    at: str
    journal: str
    kind: str
    subject: int
    state: str
    detail: str | None


@dataclass(frozen=True)
class JournalView:
    """One journal as the page shows it: its status, or why it cannot be read (yet)."""

    journal: str
    status: Status | None
    problem: str | None


@dataclass(frozen=True)
class Overview:
    """Everything the overview shows, summed across the journals given (the shards of one sync, or just one)."""

    at: str
    state: str  # running while any journal's run runs; else interrupted, finished, or "no run yet"
    journals: tuple[JournalView, ...]
    pages_listed: int
    pages_total: int | None  # the pages the runs list, once every run knows its total
    animals: dict[str, int]  # by state, every state present
    expected: int  # animals there are to sync: 10 a page once totals are known, else those listed so far
    fetched: int
    posted: int
    done: int  # posted, settled as delivered, or unchanged since an earlier delivery
    rates: dict[str, float | None]  # pages, fetched, posted: per second over the last RATE_WINDOW seconds
    eta_seconds: float | None
    elapsed_seconds: float
    posts: dict[str, int]  # POST outcomes, summed
    retries: dict[str, int]  # by kind, summed
    exceptions: tuple[Fix, ...]
    events: tuple[LogLine, ...]

    def to_json(self) -> dict[str, Any]:
        return plain(self)


def _add(into: dict[str, int], counts: Any) -> None:
    for name, n in counts.items():
        into[name] = into.get(name, 0) + n


class _Audits:
    """The audit of a run that is not running, kept while nothing can have changed it: it re-checks every record.

    A run's rows change only while it runs (a resume clears `finished_at` and counts an attempt) or when a person
    settles one of its batches, so that is the key; no look at the file is needed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, int], tuple[tuple[Any, ...], Audit]] = {}

    def of(self, journal: Journal, run: RunRow) -> Audit:
        where = (str(journal.path), run.id)
        key = (run.state, run.finished_at, run.attempts, len(journal.settlements(run.id)))
        with self._lock:
            kept = self._kept.get(where)
        if kept is not None and kept[0] == key:
            return kept[1]
        verdict = audit(journal, run.id)
        with self._lock:
            self._kept[where] = (key, verdict)
        return verdict


AUDITS = _Audits()


def _fixes(journal: Journal, run: RunRow, report: Status, name: str) -> list[Fix]:
    """The exceptions of one journal's last run, each with the command that settles it (`--journal` carried)."""
    flag = f"--journal {shlex.quote(name)}"
    resume = f"animal-sync resume {flag}"
    fixes: list[Fix] = []
    process = report.process
    if report.state is RunState.RUNNING and process is not None and not process.alive:
        fixes.append(Fix(name, "writer_gone", 1, f"the run's process (pid {process.pid}) is gone: killed?", resume))
    if report.state is RunState.INTERRUPTED:
        fixes.append(Fix(name, "interrupted", 1, report.message or "the run stopped before it finished", resume))
    if report.state is RunState.RUNNING:  # the audit re-checks every record: it waits for the run's end
        counts = {kind: report.animals.get(kind, 0) for kind in ("failed", "quarantined")}
        in_doubt = journal.batches(report.run_id, BatchState.IN_DOUBT)
        resent = []
    else:
        verdict = AUDITS.of(journal, run)
        counts = dict(verdict.exception_counts)
        in_doubt = journal.batches(report.run_id, BatchState.IN_DOUBT)
        resent = unsettled_resends(journal, report.run_id)
    if counts.get("upstream_changed"):
        fixes.append(Fix(
            name, "upstream_changed", 1, "the upstream drew another data set under the run's ids",
            f"animal-sync run --abandon {flag}",
        ))
    for kind in RESUMED:
        if counts.get(kind):
            fixes.append(Fix(name, kind, counts[kind], f"{kind} {'pages' if kind == 'unlisted_page' else 'animals'}: a resume tries them again", resume))
    for batch in in_doubt[:NAMED]:
        fixes.append(Fix(
            name, "in_doubt", len(batch.ids),
            f"batch {batch.id}: its POST's outcome is unknown ({batch.last_error or 'no answer'}); `{resume}` re-sends it",
            f"animal-sync settle {batch.id} --delivered --reason {REASON} {flag}",
        ))
    for batch in resent[:NAMED]:
        fixes.append(Fix(
            name, "at_least_once", len(batch.ids), f"batch {batch.id}: re-sent after a doubt and answered 2xx",
            f"animal-sync settle {batch.id} --delivered --reason {REASON} {flag}",
        ))
    for kind in INSPECT:
        if counts.get(kind):
            fixes.append(Fix(name, kind, counts[kind], f"{kind}: the audit names each one", f"animal-sync audit {flag}"))
    return fixes


def _one(name: str, events: list[LogLine], fixes: list[Fix]) -> JournalView:
    """One look at one journal: its status, exceptions and latest transitions; a problem in words if it cannot."""
    path = Path(name)
    if not path.exists():
        return JournalView(name, None, f"no journal at {name} yet: `animal-sync run --journal {shlex.quote(name)}` starts one")
    try:
        with Journal.open(path, readonly=True) as journal:
            run = select_run(journal, None)
            report = status(journal, run.id)
            fixes.extend(_fixes(journal, run, report, name))
            events.extend(LogLine(e.at, name, e.kind, e.subject, e.state, e.detail) for e in recent_events(journal, run.id, EVENTS))
    except JournalError as exc:
        return JournalView(name, None, str(exc))
    return JournalView(name, report, None)


@dataclass
class _Sample:
    at: float
    pages: int
    fetched: int
    posted: int


class Sampler:
    """Looks at the journals at most once a second, whoever asks, and keeps the figures rates are measured from."""

    def __init__(self, journals: Sequence[str | os.PathLike[str]], *, every: float = 1.0) -> None:
        self.journals = [str(path) for path in journals]
        self.every = max(1.0, every)  # nothing refreshes faster than once a second
        self._samples: deque[_Sample] = deque()
        self._lock = threading.Lock()
        self._last: tuple[float, Overview] | None = None

    def overview(self) -> Overview:
        """The latest look, taken again when the last one is `every` seconds old."""
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.every:
                return self._last[1]
            found = look(self.journals, self._rates)
            self._last = (time.monotonic(), found)
            return found

    def _rates(self, pages: int, fetched: int, posted: int) -> dict[str, float | None]:
        now = time.monotonic()
        samples = self._samples
        samples.append(_Sample(now, pages, fetched, posted))
        while samples and now - samples[0].at > RATE_WINDOW:
            samples.popleft()
        first = samples[0]
        span = now - first.at
        if span < 0.5:
            return {"pages": None, "fetched": None, "posted": None}
        return {
            "pages": round(max(0, pages - first.pages) / span, 2),
            "fetched": round(max(0, fetched - first.fetched) / span, 1),
            "posted": round(max(0, posted - first.posted) / span, 1),
        }


def _no_rates(pages: int, fetched: int, posted: int) -> dict[str, float | None]:
    return {"pages": None, "fetched": None, "posted": None}


def look(journals: Sequence[str], rates: Any = _no_rates) -> Overview:
    """One look at every journal: the union of their last runs, as `status --journal A --journal B` sums them."""
    events: list[LogLine] = []
    fixes: list[Fix] = []
    views = tuple(_one(name, events, fixes) for name in journals)
    reports = [view.status for view in views if view.status is not None]
    animals = {state.value: 0 for state in AnimalState}
    posts: dict[str, int] = {}
    retries: dict[str, int] = {}
    for report in reports:
        _add(animals, report.animals)
        _add(posts, report.posts)
        _add(retries, report.retries)
    states = {report.state for report in reports}
    state = next((str(s) for s in (RunState.RUNNING, RunState.INTERRUPTED, RunState.ABANDONED, RunState.FINISHED) if s in states), "no run yet")
    owned = [report.pages.owned for report in reports]
    pages_total = sum(owned) if owned and None not in owned else None  # type: ignore[arg-type]
    listed = sum(animals.values())
    expected = max(listed, pages_total * 10) if pages_total is not None and len(reports) == len(views) else listed
    fetched = sum(animals[state] for state in FETCHED)
    done = sum(animals[state] for state in DONE)
    pages_listed = sum(report.pages.listed for report in reports)
    rate = rates(pages_listed, fetched, animals[AnimalState.POSTED])
    left = expected - done
    eta = round(left / rate["posted"], 1) if state == RunState.RUNNING and rate["posted"] else None
    events.sort(key=lambda line: line.at, reverse=True)
    return Overview(
        at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        state=state,
        journals=views,
        pages_listed=pages_listed,
        pages_total=pages_total,
        animals=animals,
        expected=expected,
        fetched=fetched,
        posted=animals[AnimalState.POSTED],
        done=done,
        rates=rate,
        eta_seconds=eta,
        elapsed_seconds=max((report.elapsed_seconds for report in reports), default=0.0),
        posts=posts,
        retries=retries,
        exceptions=tuple(fixes),
        events=tuple(events[:EVENTS]),
    )
