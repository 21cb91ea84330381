"""The coordinator of one attempt: list -> fetch -> transform -> batch -> post, overlapped on thread pools.

One coordinator thread owns the journal; worker threads only talk HTTP and run pure code (fetch.py, examine.py);
listing.py plans which page to list next. Each step of the coordinator records what finished, schedules what is
next, and commits once. A batch's POST leaves journaled `withheld` (its body held back for `100 Continue`); just
before the body is released the POST thread has the coordinator journal it `sending` and fsync that (release.py),
and its answer is committed as soon as it arrives. So a process killed at any instant leaves in doubt at most the
batches whose bodies had left, and names them; a batch killed while its body was still held back is provably unsent
and is sent again as a first send. What an answer means is decided by `outcomes.classify`; the coordinator only
applies the verdict.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import structlog

from ..client.api import AnimalsApi, ApiUnreachable, CredentialRefused, FetchFailed, Page
from .attempt import Progress, RunResult, Seen, conclude, count_retries
from ..config import Settings
from ..errors import JournalError
from .fetch import Fetched, fetch
from .incremental import Baseline
from ..journal import AnimalState, BatchRow, BatchState, Journal, NoRoomForAnswer, RunRow, unsettled_resends
from .listing import Listing
from .outbox import Outbox
from ..client.outcomes import Action, Halt
from .upstream import UpstreamCheck
from ..urls import redact_url

__all__ = ["Sync"]

log = structlog.get_logger("animal_sync")

STEP_SECONDS = 0.02  # the coordinator commits at most this often (plus at once for answers and body releases)
QUEUE_DEPTH = 3  # GETs queued per worker, so no worker idles while the coordinator commits


class Sync:
    """One attempt at one run: drives the pipeline until nothing is left, it is stopped, or the API is gone."""

    def __init__(
        self,
        journal: Journal,
        api: AnimalsApi,
        run: RunRow,
        settings: Settings,
        *,
        stop: threading.Event | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.journal = journal
        self.api = api
        self.run = run
        self.settings = settings
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.log = log.bind(run_id=run.id)
        self.progress = Progress(run_id=run.id, total_pages=run.total_pages)
        self.counters: Counter[str] = Counter()
        self.to_fetch: deque[int] = deque()
        self.unbatched: list[int] = []
        self.listing = Listing(settings.shard)  # the pages this attempt asks for, and those it could not list
        self.unreachable: str | None = None
        self.empty_pages: list[int] = []  # pages inside the claimed total that listed nothing: the total is not believed
        self.refused: str | None = None  # the API turned the credential away (401/403): set with `unreachable`
        # The data set is checked before anything of a resumed run is fetched or sent (upstream.py).
        self.check = UpstreamCheck()
        self.gets: dict[Future[Any], tuple[str, int]] = {}
        self.outbox = Outbox(journal, run.id, settings, self.counters, self.progress, self.log)
        self.baseline = Baseline(journal, run) if settings.incremental else None  # None: a full sync, by choice

    # -- set-up ----------------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Rebuild the in-memory queues from the journal alone: a fresh run and a resume take the same path."""
        run_id = self.run.id
        with self.journal.transaction():
            in_doubt = self.journal.sending_to_in_doubt(run_id)
            unsent = self.journal.withheld_to_unsent(run_id)
            retried = self.journal.retry_exceptions(run_id)
        for batch_id in unsent:
            self.log.info("batch_unsent", batch_id=batch_id, reason="its body was held back when the last process stopped")
        for batch_id in in_doubt:
            self.log.warning("batch_in_doubt", batch_id=batch_id, reason="in flight when the last process stopped")
        if retried:
            self.log.info("retrying_exceptions", animals=retried)
        self.listing.listed = self.journal.listed_pages(run_id)
        self.check.resume_from(self.journal.first_listed_page(run_id))
        self.progress.pages_listed = len(self.listing.listed)
        self._plan_pages(self.run.total_pages)
        self.to_fetch.extend(self.journal.animal_ids(run_id, AnimalState.DISCOVERED))
        self.unbatched = self.journal.animal_ids(run_id, AnimalState.FETCHED)
        counts = self.journal.count_animals(run_id)
        self.progress.discovered = sum(counts.values())
        self.progress.posted = counts.get(AnimalState.POSTED, 0)
        self.progress.unchanged = counts.get(AnimalState.UNCHANGED, 0)
        self.progress.fetched = self.progress.posted + self.progress.unchanged + counts.get(AnimalState.BATCHED, 0) + len(self.unbatched)
        if self.settings.dry_run:
            return  # a dry run never sends, whatever the journal holds: no batch is queued
        self.outbox.queue_journaled()

    # -- scheduling ------------------------------------------------------------------------------------------

    def _within_limit(self) -> bool:
        return self.settings.limit is None or self.progress.discovered < self.settings.limit

    def _pages_left(self) -> bool:
        """Pages still to ask for in this attempt (not listed, not in flight, not failed already), within --limit."""
        in_flight = {key for kind, key in self.gets.values() if kind == "page"}
        return self._within_limit() and self.listing.left(self.progress.total_pages, in_flight)

    def _plan_pages(self, total: int | None) -> None:
        """A sharded run's bars and estimates count its own pages only."""
        if self.settings.shard is not None and total is not None:
            self.progress.pages_owned = len(self.listing.shard.pages(total))

    def _halted(self) -> bool:
        """Whether this attempt must stop asking the API for more (its in-flight POSTs are still finished)."""
        return (
            self.stop.is_set()
            or self.unreachable is not None
            or self.check.changed is not None
            or self.check.failed is not None
            or self.outbox.no_room is not None
            or bool(self.empty_pages)
        )

    def _check_in_flight(self) -> bool:
        return any(kind == "check" for kind, _ in self.gets.values())

    def _schedule_check(self, pool: ThreadPoolExecutor, page: int | None = None) -> None:
        """List a page again (the baseline unless `page` is given): its total and digest tell whether the upstream
        drew a new data set."""
        if self.check.baseline is not None and self._check_in_flight():
            return
        page = self.check.start(time.monotonic(), page)
        if page is not None:  # None: nothing listed yet, nothing to compare with
            self.gets[pool.submit(self.api.list_page, page)] = ("check", page)

    def _waiting_batch(self) -> BatchRow | None:
        """The next batch to send, if no check has vouched for the data set since it was built."""
        if not self.outbox.to_post:
            return None
        head = self.outbox.to_post[0]
        return None if self.check.covers(self.outbox.built_at(head)) else head

    def _listing_done(self) -> bool:
        return not self._pages_left() and not any(kind == "page" for kind, _ in self.gets.values())

    def _schedule_gets(self, pool: ThreadPoolExecutor) -> None:
        now = time.monotonic()
        if not self.check.verified:
            if self.check.retry_due(now):  # a failed check is tried again after a pause
                self._schedule_check(pool)
            return  # nothing of a resumed run is fetched before its data set is known to be the same
        idle = not self.to_fetch and not self.gets  # nothing else to wait for: check at once
        if self.check.wanted(now, idle):
            self._schedule_check(pool)
        waiting = self._waiting_batch()
        if waiting is not None and not self._check_in_flight() and (self.check.failures == 0 or self.check.retry_due(now)):
            # The next batch to send was built after the last check: list again a page it holds before it may go.
            self._schedule_check(pool, self.journal.animal_page(self.run.id, waiting.ids[-1]))
        capacity = self.settings.workers * QUEUE_DEPTH
        low_water = self.settings.workers * 8  # list ahead only while the fetch queue runs low: memory stays flat
        pages_in_flight = sum(1 for kind, _ in self.gets.values() if kind == "page")
        page_slots = max(2, self.settings.workers // 4)
        while (
            len(self.gets) < capacity
            and pages_in_flight < page_slots
            and len(self.to_fetch) < low_water
            and self._pages_left()
        ):
            page = self.listing.next_page(self.progress.total_pages)
            self.gets[pool.submit(self.api.list_page, page)] = ("page", page)
            pages_in_flight += 1  # before the total is known, the first few pages at once (listing.OPENING_PAGES)
        if len(self.outbox.to_post) > 2 * self.settings.post_workers:
            return  # posting lags behind: stop fetching until it catches up, so batches do not pile up
        while len(self.gets) < capacity and self.to_fetch:
            animal_id = self.to_fetch.popleft()
            self.gets[pool.submit(fetch, self.api, animal_id)] = ("detail", animal_id)

    # -- results ---------------------------------------------------------------------------------------------

    def _take_get(self, future: Future[Any], kind: str, key: int) -> None:
        try:
            result = future.result()
        except ApiUnreachable as exc:
            # Not this animal's fault: it stays discovered, and the run stops for a later resume.
            refused = isinstance(exc, CredentialRefused)
            count_retries(self.counters, self.progress, exc.retries)
            self.counters["error_credential_refused" if refused else "error_api_unreachable"] += 1
            self._halt(str(exc), refused)
            return
        except FetchFailed as exc:
            count_retries(self.counters, self.progress, exc.retries)
            self._fetch_failed(kind, key, str(exc), attempts=1 + len(exc.retries))
            return
        if kind == "check":
            self._checked(result)
        elif kind == "page":
            self._listed(result)
        else:
            self._fetched(result)

    def _fetch_failed(self, kind: str, key: int, reason: str, attempts: int) -> None:
        self.counters[f"error_{kind}_failed"] += 1
        if kind == "check":
            self.log.warning("check_failed", page=key, reason=reason)
            self.check.could_not_check(key, reason, time.monotonic(), gating=self._waiting_batch() is not None)
            return
        if kind == "page":
            self.listing.failed[key] = reason
            self.log.warning("page_failed", page=key, reason=reason)
            return
        self.journal.record_fetch_failed(self.run.id, key, reason, attempts=attempts)
        self.progress.failed += 1
        self.check.due = True  # a listed id that stopped answering may mean the upstream restarted
        self.log.warning("retry_budget_exhausted", animal_id=key, reason=reason)

    def _upstream_changed(self, page: Page) -> bool:
        """Whether this listing shows another data set; the first time, count and log it."""
        what = self.check.difference(page, self.progress.total_pages, self.journal.page_digest(self.run.id, page.page))
        if what is not None and self.check.change(what):
            self.counters["upstream_changed"] += 1
            self.log.error("upstream_changed", change=what)
        return what is not None

    def _checked(self, page: Page) -> None:
        count_retries(self.counters, self.progress, page.retries)
        if not self._upstream_changed(page):
            self.check.same()

    def _listed(self, page: Page) -> None:
        count_retries(self.counters, self.progress, page.retries)
        if self._upstream_changed(page):  # journal nothing of it: one run never mixes two data sets
            return
        if page.page > max(page.total_pages, 1):  # a shard past the last page: it owns none, but now knows the total
            self.journal.set_total_pages(self.run.id, page.total_pages)
            self.listing.listed.add(page.page)
            self.progress.total_pages = page.total_pages
            self._plan_pages(page.total_pages)
            return
        if not page.ids and not page.bad_items:  # inside the claimed total, yet empty: the total is not believed
            self.empty_pages.append(page.page)
            self.log.error("empty_page", page=page.page, total_pages=page.total_pages)
            return
        room = None if self.settings.limit is None else self.settings.limit - self.progress.discovered
        new_ids = self.journal.record_page(
            self.run.id, page.page, page.ids, page.total_pages, max_new=room, digest=page.digest,
            bad_items=page.bad_items,
        )
        for item in page.bad_items:
            self.counters["bad_listing_item"] += 1
            self.log.warning("bad_listing_item", page=page.page, item=item["item"], reason=item["reason"])
        self.listing.listed.add(page.page)
        self.progress.pages_listed += 1
        self.progress.discovered += len(new_ids)
        self.progress.total_pages = page.total_pages
        self._plan_pages(page.total_pages)
        self.check.listed(page)
        self.to_fetch.extend(new_ids)

    def _fetched(self, fetched: Fetched) -> None:
        count_retries(self.counters, self.progress, fetched.retries)
        if fetched.transformed is None:
            self.journal.record_quarantined(self.run.id, fetched.animal_id, fetched.raw, fetched.reason or "", attempts=fetched.attempts)
            self.progress.quarantined += 1
            self.counters["quarantined"] += 1
            self.log.warning("record_quarantined", animal_id=fetched.animal_id, reason=fetched.reason)
            return
        self.progress.fetched += 1
        since = self.baseline.unchanged_since(fetched.animal_id, fetched.transformed) if self.baseline else None
        if since is not None:  # the very record an earlier run delivered: journaled with a pointer to it, not sent
            self.journal.record_unchanged(self.run.id, fetched.animal_id, fetched.raw, fetched.transformed, fetched.attempts, since)
            self.progress.unchanged += 1
            return
        self.journal.record_fetched(self.run.id, fetched.animal_id, fetched.raw, fetched.transformed, attempts=fetched.attempts)
        self.unbatched.append(fetched.animal_id)

    def _halt(self, reason: str | None, refused: bool) -> None:
        """The API stopped answering, or refused the credential: the run stops (the first refusal is named)."""
        self.unreachable = reason
        self.refused = self.refused or (reason if refused else None)

    # -- the loop --------------------------------------------------------------------------------------------

    def execute(self) -> RunResult:
        """Run until done, stopped, or the API is unreachable; the journal is consistent whenever this returns."""
        self._prepare()
        started = time.monotonic()
        self.log.info(
            "run_started", attempt=self.run.attempts, base_url=redact_url(self.settings.base_url),
            **({"incremental": self.baseline.describe()} if self.baseline is not None else {}),
        )
        get_pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="get")
        post_pool = ThreadPoolExecutor(self.settings.post_workers, thread_name_prefix="post")
        try:
            self._loop(get_pool, post_pool)
        except JournalError as exc:
            self.outbox.desk.close()  # a body not yet released is withheld now: its batch stays provably unsent
            post_pool.shutdown(wait=True)  # the POSTs out still get answers the journal cannot take: name them
            released = self.outbox.released()
            if released:
                raise self.outbox.answers_not_journaled(released, exc) from None
            raise
        finally:
            self.outbox.desk.close()  # never leave a POST thread waiting for a coordinator that has gone
            # GETs are safe to drop: cut those in flight, cancel the queued ones, and do not wait for their threads.
            self.api.abandon_gets()
            get_pool.shutdown(wait=False, cancel_futures=True)
            post_pool.shutdown(wait=True)
        return self._finish(time.monotonic() - started)

    def _loop(self, get_pool: ThreadPoolExecutor, post_pool: ThreadPoolExecutor) -> None:
        while True:
            self.outbox.serve_releases()  # first: a POST thread is waiting with the API's `100 Continue` in hand
            stopping = self._halted()
            step_started = time.monotonic()
            if stopping and self.gets:  # dropped unread: a late result must not touch the journal
                self.api.abandon_gets()
                self.gets.clear()
            results = self.outbox.answered()
            if results:  # their own commit: nothing else in the step can delay it or take it down with it
                try:
                    with self.journal.transaction():
                        for batch, result in results:
                            verdict = self.outbox.take(batch, result)
                            if verdict.action in (Action.SPLIT, Action.FAILED):
                                self.check.due = True  # ids the API no longer knows are refused: it may have restarted
                            # The API never took the send; once a stop was asked, a POST cut short in its wait
                            # between tries says nothing of the API: the run ends stopped, not unreachable.
                            if verdict.halt is not None and not (verdict.halt is Halt.UNREACHABLE and self.stop.is_set()):
                                self._halt(result.error, verdict.halt is Halt.CREDENTIAL_REFUSED)
                except JournalError as exc:
                    released = [(batch, result) for batch, result in results if batch.state is BatchState.SENDING]
                    if not released:  # no body of theirs left: they stay withheld, unsent for the next resume
                        raise
                    raise self.outbox.answers_not_journaled(released, exc) from None
            with self.journal.transaction():
                self._collect_gets()
                stopping = stopping or self._halted()
                if not stopping:
                    self._schedule_gets(get_pool)
                listing_done = self._listing_done()
                fetching_done = listing_done and not self.to_fetch and not self.gets
                self.unbatched = self.outbox.make_batches(self.unbatched, final=fetching_done and not stopping)
                self.journal.add_counters(self.run.id, self.counters)
                self.counters.clear()
            due = []
            if not stopping and self.check.verified and self.outbox.has_room():
                try:
                    with self.journal.transaction():  # not fsynced: lost to a power cut, the batch is just pending
                        due = self.outbox.due(self.check.covers)
                except NoRoomForAnswer as exc:  # send nothing more; the answers in flight still have room
                    self.outbox.no_room = exc
            # Committed as `withheld`: a kill before serve_releases() leaves them unsent.
            self.outbox.send(post_pool, self.api, due)
            if self.on_progress:
                self.on_progress(self.progress)
            if (stopping or self.outbox.no_room is not None) and not self.outbox.posts:
                if self.outbox.no_room is not None:
                    raise self.outbox.no_room  # no room to end the run in the journal either: one line, exit 2
                return  # in-flight GETs are dropped: their animals stay discovered and are fetched next time
            if not stopping and fetching_done and not self.outbox.posts and not self.outbox.to_post and not self.check.due:
                return
            pending = list(self.gets) + list(self.outbox.posts)
            if pending:
                wait([*pending, self.outbox.desk.wakeup], timeout=0.5, return_when=FIRST_COMPLETED)
            # A release request cuts the pause short: its POST holds the API's `100 Continue` while it waits.
            wait([self.outbox.desk.wakeup], timeout=max(0.0, STEP_SECONDS - (time.monotonic() - step_started)))

    def _collect_gets(self) -> None:
        """Record every finished GET: listed pages, fetched or quarantined animals, failures."""
        for future in [f for f in self.gets if f.done()]:
            kind, key = self.gets.pop(future)
            self._take_get(future, kind, key)

    def _finish(self, elapsed: float) -> RunResult:
        run_id = self.run.id
        counts = self.journal.count_animals(run_id)
        batches = self.journal.count_batches(run_id)
        in_doubt = tuple(batch.id for batch in self.journal.batches(run_id, BatchState.IN_DOUBT))
        outcome: dict[str, Any] = {
            "animals": counts, "batches": batches, "elapsed_seconds": round(elapsed, 3),
            "failed_pages": sorted(self.listing.failed),
        }
        seen = Seen(
            refused=self.refused, changed=self.check.changed, unreachable=self.unreachable,
            stopped=self.stop.is_set(), check_failed=self.check.failed, empty_pages=tuple(self.empty_pages),
            total_pages=self.progress.total_pages,
            listing_started=self.progress.total_pages is not None, failed_pages=self.listing.failed,
            dry_run=self.settings.dry_run,
        )
        if self.check.changed is not None and self.refused is None:
            outcome["upstream_changed"] = self.check.changed
        # A batch answered 2xx only after a doubt went out at least once: the audit's verdict, and so ours.
        resent = [batch.id for batch in unsettled_resends(self.journal, run_id)]
        bad_items = len(self.journal.bad_listing_items(run_id))
        state, kind, message = conclude(seen, counts, in_doubt, bad_items, resent)
        if self.baseline is not None:
            outcome["incremental"] = self.baseline.describe()
            message = f"{message} ({outcome['incremental']})"
        outcome["message"] = message
        self.journal.end_run(run_id, state, outcome)
        self.log.info("run_finished", state=str(state), outcome=str(kind), elapsed=round(elapsed, 3), **{
            f"animals_{k}": v for k, v in counts.items()
        })
        return RunResult(run_id, state, kind, message, counts, in_doubt, tuple(resent))
