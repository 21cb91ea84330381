"""Start or resume a run: the library's entry points, each one attempt driven by the coordinator (sync.py).

list -> fetch -> transform -> batch -> post, overlapped on thread pools, with the journal as the only truth. The
modules behind it: sync.py (the coordinator, the only journal writer), outbox.py (its POST side), outcomes.py (what
a POST's answer means), upstream.py (whether the data set is still the run's), listing.py (which pages are left),
fetch.py and examine.py (a detail fetched, decoded and transformed), attempt.py (progress and how an attempt ended,
named here too for the callers of the entry points).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..client.api import AnimalsApi
from .attempt import Progress, RunOutcome, RunResult, Seen, conclude
from ..config import Settings
from .contact import Unanswered, reach
from ..errors import AlreadySynced, JournalMissing, NoRunToResume, UnfinishedRun
from ..journal import AnimalState, BatchState, Journal, RunRow, RunState, unsettled_resends
from ..shards import WHOLE, check_same_shard, journaled_shard
from .sync import Sync
from ..urls import redact_url

__all__ = ["Progress", "RunOutcome", "RunResult", "resume_run", "start_run"]


def start_run(
    settings: Settings,
    *,
    abandon: bool = False,
    full_resync: bool = False,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_waiting: Callable[[Unanswered], None] | None = None,
    reach_within: float | None = None,
) -> RunResult:
    """Start a new run in the journal; refuse (JournalError) if an unfinished one exists, unless abandoning it,
    if the journal's runs were for another shard (ShardMismatch): a shard's journal proves that shard only, or if
    a full sync against the same API already finished in it (AlreadySynced), unless `full_resync` or the new run
    is incremental or dry. A damaged journal is refused too: it must never look like a journal to start over in."""
    journal = Journal.open(settings.journal, exclusive=True)
    try:
        last = journal.last_run()
        if last is not None:
            journal.check_integrity()
            check_same_shard(journal.path, last.settings, settings.shard)
            done = journal.last_full_sync(redact_url(settings.base_url))
            if done is not None and not (full_resync or settings.incremental or settings.dry_run):
                raise AlreadySynced(settings.journal, done)
        if last is not None and last.state in (RunState.RUNNING, RunState.INTERRUPTED):
            if not abandon:
                raise UnfinishedRun(settings.journal, last.id, last.started_at, redact_url(settings.base_url))
        reach(settings, within=reach_within, stop=stop, on_waiting=on_waiting)  # an API never reached begins no run (ApiNotReached)
        if last is not None and last.state in (RunState.RUNNING, RunState.INTERRUPTED):
            journal.end_run(last.id, RunState.ABANDONED, {"message": "abandoned by a new run"})
        run = journal.start_run(settings.journaled(), redact_url(settings.base_url))
        return _execute(journal, run, settings, stop, on_progress)
    finally:
        journal.close()


def resume_run(
    journal_path: str | os.PathLike[str],
    *,
    overrides: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_waiting: Callable[[Unanswered], None] | None = None,
    reach_within: float | None = None,
) -> RunResult:
    """Continue the last unfinished run from its journal alone (secrets come back in through `overrides`)."""
    if not os.path.exists(journal_path):  # a typo must not leave an empty journal and a lock file behind
        raise JournalMissing(journal_path)
    journal = Journal.open(journal_path, exclusive=True)
    try:
        last = journal.last_run()
        if last is None:
            raise NoRunToResume(journal_path)
        if last.state not in (RunState.RUNNING, RunState.INTERRUPTED, RunState.FINISHED):
            raise NoRunToResume(journal_path, last.id, last.state)
        settings = Settings.from_journal(last.settings, journal=journal_path, **(overrides or {}))
        if last.state is RunState.FINISHED and not _work_left(journal, last, settings):
            return _already_finished(journal, last, settings)  # never re-checked: an upstream restart must not undo it
        reach(settings, within=reach_within, stop=stop, on_waiting=on_waiting)  # an API never reached resumes nothing (ApiNotReached)
        run = journal.resume_run(last.id)
        return _execute(journal, run, settings, stop, on_progress)
    finally:
        journal.close()


def _work_left(journal: Journal, run: RunRow, settings: Settings) -> bool:
    """Whether a resume of this finished run has anything to do: animals to fetch or retry, batches to send, pages
    to list. A finished run with nothing left is not resumed at all, so no check of the data set and no outage can
    turn a proven run back into an unfinished one (cron and Indexed Jobs resume whatever the journal holds)."""
    animals, batches = journal.count_animals(run.id), journal.count_batches(run.id)
    retried = (AnimalState.QUARANTINED, AnimalState.FAILED, AnimalState.DISCOVERED, AnimalState.FETCHED)
    queued = (BatchState.PENDING, BatchState.WITHHELD, BatchState.SENDING)
    queued += (BatchState.IN_DOUBT,) if settings.resend_in_doubt else ()
    owned = 0 if run.total_pages is None else len((journaled_shard(run.settings) or WHOLE).pages(run.total_pages))
    pages_left = owned - len(journal.listed_pages(run.id))
    failed_pages = (run.outcome or {}).get("failed_pages") or ()
    return bool(
        sum(animals.get(state, 0) for state in retried) or sum(batches.get(state, 0) for state in queued)
        or pages_left > 0 or failed_pages
    )


def _already_finished(journal: Journal, run: RunRow, settings: Settings) -> RunResult:
    """A finished run with nothing to resume: said as it ended, with its exceptions named, and nothing written."""
    counts = journal.count_animals(run.id)
    in_doubt = tuple(batch.id for batch in journal.batches(run.id, BatchState.IN_DOUBT))
    resent = [batch.id for batch in unsettled_resends(journal, run.id)]
    bad_items = len(journal.bad_listing_items(run.id))
    # No failed page here: one would be work left for a resume (`_work_left`).
    seen = Seen(
        refused=None, changed=None, unreachable=None, stopped=False, check_failed=None, listing_started=True,
        failed_pages={}, dry_run=settings.dry_run,
    )
    _, outcome, line = conclude(seen, counts, in_doubt, bad_items, resent)
    return RunResult(
        run.id, RunState.FINISHED, outcome, f"already finished, nothing to resume: {line}", counts, in_doubt,
        tuple(resent),
    )


def _execute(
    journal: Journal,
    run: RunRow,
    settings: Settings,
    stop: threading.Event | None,
    on_progress: Callable[[Progress], None] | None,
) -> RunResult:
    journal.record_attempt_url(run.id, redact_url(settings.base_url))  # status shows the API this attempt uses
    stop = stop or threading.Event()
    api = AnimalsApi(settings, stop)  # a stop also ends any wait between retries at once
    try:
        result = Sync(journal, api, run, settings, stop=stop, on_progress=on_progress).execute()
        return replace(result, base_url=redact_url(settings.base_url))
    finally:
        api.close()
