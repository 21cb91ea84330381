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
from typing import Any

from .api import AnimalsApi
from .attempt import Progress, RunOutcome, RunResult, summary
from .audit import audit
from .config import Settings
from .errors import JournalError
from .journal import AnimalState, BatchState, Journal, RunRow, RunState
from .settle import unsettled_resends
from .shards import check_same_shard
from .status import status
from .sync import Sync
from .urls import redact_url

__all__ = ["AlreadySynced", "Progress", "RunOutcome", "RunResult", "resume_run", "start_run"]


class AlreadySynced(JournalError):
    """A plain `run` on a journal that already finished a full sync against the same API: it would post every
    animal again. Refused, with no request sent, unless the caller chose it (`full_resync`)."""

    def __init__(self, path: os.PathLike[str] | str, run: RunRow) -> None:
        self.path, self.run = path, run
        journal = f"--journal {path}"
        super().__init__(
            f"journal {path} already holds run {run.id}, a full sync against {run.base_url} that finished"
            f" {run.finished_at}; a second `run` would post every animal again, so nothing was sent. Choose:"
            f" `animal-sync run --incremental {journal}` posts only what is new or changed;"
            f" `animal-sync run --full-resync {journal}` sends everything again, knowingly;"
            " or give the new sync a journal of its own (--journal NEW.db)"
        )


def start_run(
    settings: Settings,
    *,
    abandon: bool = False,
    full_resync: bool = False,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
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
                raise JournalError(
                    f"journal {settings.journal} holds unfinished run {last.id} (started {last.started_at});"
                    " continue it with `animal-sync resume`, or pass --abandon to start over knowingly"
                )
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
) -> RunResult:
    """Continue the last unfinished run from its journal alone (secrets come back in through `overrides`)."""
    if not os.path.exists(journal_path):  # a typo must not leave an empty journal and a lock file behind
        raise JournalError(f"no journal at {journal_path}; start a run with `animal-sync run`")
    journal = Journal.open(journal_path, exclusive=True)
    try:
        last = journal.last_run()
        if last is None:
            raise JournalError(f"journal {journal_path} holds no run; start one with `animal-sync run`")
        if last.state not in (RunState.RUNNING, RunState.INTERRUPTED, RunState.FINISHED):
            raise JournalError(f"the last run in {journal_path} was {last.state}; start a new one with `animal-sync run`")
        settings = Settings.from_journal(last.settings, journal=journal_path, **(overrides or {}))
        if last.state is RunState.FINISHED and not _work_left(journal, last, settings):
            return _already_finished(journal, last, settings)  # never re-checked: an upstream restart must not undo it
        run = journal.resume_run(last.id)
        return _execute(journal, run, settings, stop, on_progress)
    finally:
        journal.close()


def _work_left(journal: Journal, run: RunRow, settings: Settings) -> bool:
    """Whether a resume of this finished run has anything to do: animals to fetch or retry, batches to send, pages
    to list. A finished run with nothing left is not resumed at all, so no check of the data set and no outage can
    turn a proven run back into an unfinished one (cron and Indexed Jobs resume whatever the journal holds)."""
    report = status(journal, run.id)
    animals, batches = report.animals, report.batches
    retried = (AnimalState.QUARANTINED, AnimalState.FAILED, AnimalState.DISCOVERED, AnimalState.FETCHED)
    queued = batches.get(BatchState.PENDING, 0) + batches.get(BatchState.WITHHELD, 0) + batches.get(BatchState.SENDING, 0)
    doubted = batches.get(BatchState.IN_DOUBT, 0) if settings.resend_in_doubt else 0
    failed_pages = (run.outcome or {}).get("failed_pages") or ()
    return bool(sum(animals.get(state, 0) for state in retried) or queued or doubted or report.left.pages or failed_pages)


def _already_finished(journal: Journal, run: RunRow, settings: Settings) -> RunResult:
    """A finished run with nothing to resume: said as it is, with the audit's verdict, and nothing written."""
    verdict = audit(journal, run.id)
    counts = journal.count_animals(run.id)
    in_doubt = tuple(batch.id for batch in journal.batches(run.id, BatchState.IN_DOUBT))
    resent = [batch.id for batch in unsettled_resends(journal, run.id)]
    # No failed page here: one would be work left for a resume (`_work_left`).
    line = summary(counts, in_doubt, {}, len(journal.bad_listing_items(run.id)), settings.dry_run, resent)
    said = "its audit is clean" if verdict.ok else f"its audit names {sum(verdict.exception_counts.values())} exceptions"
    return RunResult(
        run.id, RunState.FINISHED, RunOutcome.CLEAN if verdict.ok else RunOutcome.EXCEPTIONS,
        f"already finished, nothing to resume ({said}): {line}", counts, in_doubt,
    )


def _execute(
    journal: Journal,
    run: RunRow,
    settings: Settings,
    stop: threading.Event | None,
    on_progress: Callable[[Progress], None] | None,
) -> RunResult:
    journal.record_attempt_url(run.id, redact_url(settings.base_url))  # status shows the API this attempt uses
    api = AnimalsApi(settings)
    try:
        return Sync(journal, api, run, settings, stop=stop, on_progress=on_progress).execute()
    finally:
        api.close()
