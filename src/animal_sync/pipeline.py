"""list -> fetch -> transform -> batch -> post, overlapped on thread pools, with the journal as the only truth.

One coordinator thread owns the journal; worker threads only talk HTTP and run pure transforms. Each step
of the coordinator records what finished, schedules what is next, and commits once. A batch's POST leaves
journaled `withheld` (its body held back for `100 Continue`); just before the body is released the POST thread
has the coordinator journal it `sending` and fsync that (release.py), and its answer is committed as soon as it
arrives. So a process killed at any instant leaves in doubt at most the batches whose bodies had left, and names
them; a batch killed while its body was still held back is provably unsent and is sent again as a first send.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog

from .api import (
    AUTH_REFUSED, AnimalsApi, ApiUnreachable, BodyTooLarge, CredentialRefused, Detail, FetchFailed, Page, PostOutcome,
    PostResult,
)
from .config import Settings
from .errors import JournalError
from .journal import AnimalState, BatchRow, BatchState, Journal, NoRoomForAnswer, RunRow, RunState
from .release import ReleaseDesk
from .settle import unsettled_resends
from .transform import InvalidRecord, canonical_json, check_matches, transform
from .urls import redact_url

__all__ = ["Progress", "RunOutcome", "RunResult", "Sync", "resume_run", "start_run"]

log = structlog.get_logger("animal_sync")

STEP_SECONDS = 0.02  # the coordinator commits at most this often (plus at once for answers and body releases)
QUEUE_DEPTH = 3  # GETs queued per worker, so no worker idles while the coordinator commits
SPLIT_ON = frozenset({400, 422})  # answers that refuse a batch for its content: bisect it to find the culprit
RECHECK_SECONDS = 2.0  # a failed detail re-lists the first page to see whether the data set changed, at most this often
RECHECK_EVERY = 30.0  # and so does a long run now and then: a restart that fails nothing is still found
CHECK_TRIES = 3  # a resume's check failing this often, RECHECK_SECONDS apart, stops it: chaos fails one, not three


@dataclass
class Progress:
    """Live figures for progress bars and periodic log lines; updated by the coordinator only."""

    run_id: int | None = None
    total_pages: int | None = None
    pages_listed: int = 0
    discovered: int = 0
    fetched: int = 0
    posted: int = 0
    quarantined: int = 0
    failed: int = 0
    retries: int = 0


class RunOutcome(StrEnum):
    """Why an attempt ended: what happened, not what it means to a shell (the CLI maps it to an exit code)."""

    CLEAN = "clean"  # finished, every animal posted (or, dry, transformed) and nothing in doubt
    EXCEPTIONS = "exceptions"  # finished with failed, quarantined, in-doubt, unlisted or re-sent-after-doubt animals
    CREDENTIAL_REFUSED = "credential_refused"  # 401/403: nothing passes until the credential changes
    UPSTREAM_CHANGED = "upstream_changed"  # the data set under the run's ids is another one
    UNREACHABLE = "unreachable"  # the API stopped answering
    STOPPED = "stopped"  # a stop was asked for (Ctrl-C, SIGTERM, SIGHUP)
    CHECK_FAILED = "check_failed"  # a resume could not re-list a page to check the data set
    NEVER_LISTED = "never_listed"  # page 1 never answered with a listing


@dataclass(frozen=True)
class RunResult:
    """How an attempt ended, for the CLI's exit code and closing line."""

    run_id: int
    state: RunState
    outcome: RunOutcome
    message: str
    counts: dict[str, int] = field(default_factory=dict)
    in_doubt: tuple[int, ...] = ()


@dataclass(frozen=True)
class Fetched:
    """A worker's verdict on one detail: a transformed record, or the reason it is quarantined."""

    animal_id: int
    raw: str | bytes | None  # None when the body was refused unread
    transformed: str | None
    reason: str | None
    retries: tuple[str, ...]

    @property
    def attempts(self) -> int:
        """Detail fetches made for this animal: the first, then one per retry (journaled as `animals.attempts`)."""
        return 1 + len(self.retries)


def _examine(detail: Detail) -> Fetched:
    """Decode, check and transform one detail body; pure, so it runs on the worker thread."""
    try:
        raw: str | bytes = detail.body.decode("utf-8")
    except UnicodeDecodeError:
        return Fetched(detail.animal_id, detail.body, None, "body is not UTF-8", detail.retries)
    try:
        record = json.loads(raw)
    except ValueError as exc:
        return Fetched(detail.animal_id, raw, None, f"body is not JSON: {exc}", detail.retries)
    try:
        check_matches(record, detail.animal_id)
        outgoing = transform(record)
    except InvalidRecord as exc:
        return Fetched(detail.animal_id, raw, None, str(exc), detail.retries)
    return Fetched(detail.animal_id, raw, canonical_json(outgoing), None, detail.retries)


def _fetch(api: AnimalsApi, animal_id: int) -> Fetched:
    try:
        detail = api.fetch_detail(animal_id)
    except BodyTooLarge as exc:  # refused unread: bad data to quarantine, like any malformed record
        return Fetched(animal_id, None, None, str(exc), tuple(exc.retries))
    return _examine(detail)


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
        self.to_post: deque[BatchRow] = deque()
        self.failed_pages: dict[int, str] = {}  # page -> why it could not be listed in this attempt
        self.listed: set[int] = set()
        self.next_page = 1
        self.unreachable: str | None = None
        self.refused: str | None = None  # the API turned the credential away (401/403): set with `unreachable`
        # The data set is checked before anything of a resumed run is fetched or sent: ids are positions, so a
        # restarted upstream serves other animals under the journaled ids.
        self.baseline: tuple[int, str | None] | None = None  # (page, digest) listed again to compare
        self.verified = True
        self.changed: str | None = None  # how the upstream changed under this run; the run stops
        self.check_failed: str | None = None
        self.checks_failed = 0  # a resume's checks that got no listing; the attempt stops at CHECK_TRIES
        self.recheck_due = False
        self.last_check = float("-inf")
        self.next_periodic_check = time.monotonic() + RECHECK_EVERY
        self.no_room: NoRoomForAnswer | None = None  # sending stopped: the journal could not record more answers
        self.gets: dict[Future[Any], tuple[str, int]] = {}
        self.posts: dict[Future[PostResult], BatchRow] = {}  # each POST out and its batch as last journaled
        self.desk = ReleaseDesk()  # where POST threads ask for their body's release to be journaled

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
        self.listed = self.journal.listed_pages(run_id)
        self.baseline = self.journal.first_listed_page(run_id)
        self.verified = self.baseline is None  # nothing listed yet: the first page answered sets the baseline
        self.progress.pages_listed = len(self.listed)
        self.to_fetch.extend(self.journal.animal_ids(run_id, AnimalState.DISCOVERED))
        self.unbatched = self.journal.animal_ids(run_id, AnimalState.FETCHED)
        counts = self.journal.count_animals(run_id)
        self.progress.discovered = sum(counts.values())
        self.progress.posted = counts.get(AnimalState.POSTED, 0)
        self.progress.fetched = self.progress.posted + counts.get(AnimalState.BATCHED, 0) + len(self.unbatched)
        if self.settings.dry_run:
            return  # a dry run never sends, whatever the journal holds: no batch is queued
        self.to_post.extend(self.journal.batches(run_id, BatchState.PENDING))
        if self.settings.resend_in_doubt:
            for batch in self.journal.batches(run_id, BatchState.IN_DOUBT):
                self.log.warning("batch_resending", batch_id=batch.id, animals=len(batch.ids), reason="in doubt: at-least-once")
                self.to_post.append(batch)

    # -- scheduling ------------------------------------------------------------------------------------------

    def _within_limit(self) -> bool:
        return self.settings.limit is None or self.progress.discovered < self.settings.limit

    def _pages_left(self) -> bool:
        """Pages still to ask for in this attempt (not listed, not in flight, not failed already)."""
        if not self._within_limit():
            return False
        total = self.progress.total_pages
        if total is None:
            return 1 not in self.listed and not self._page_in_flight(1) and 1 not in self.failed_pages
        while self.next_page <= total and (
            self.next_page in self.listed or self.next_page in self.failed_pages or self._page_in_flight(self.next_page)
        ):
            self.next_page += 1
        return self.next_page <= total

    def _page_in_flight(self, page: int) -> bool:
        return ("page", page) in self.gets.values()

    def _halted(self) -> bool:
        """Whether this attempt must stop asking the API for more (its in-flight POSTs are still finished)."""
        return (
            self.stop.is_set()
            or self.unreachable is not None
            or self.changed is not None
            or self.check_failed is not None
            or self.no_room is not None
        )

    def _schedule_check(self, pool: ThreadPoolExecutor) -> None:
        """List the baseline page again: its total and digest tell whether the upstream drew a new data set."""
        if self.baseline is None:
            self.recheck_due = False  # nothing listed yet: nothing to compare with
            return
        if any(kind == "check" for kind, _ in self.gets.values()):
            return
        self.last_check = time.monotonic()
        self.next_periodic_check = self.last_check + RECHECK_EVERY
        self.recheck_due = False
        self.gets[pool.submit(self.api.list_page, self.baseline[0])] = ("check", self.baseline[0])

    def _listing_done(self) -> bool:
        return not self._pages_left() and not any(kind == "page" for kind, _ in self.gets.values())

    def _schedule_gets(self, pool: ThreadPoolExecutor) -> None:
        now = time.monotonic()
        if not self.verified:
            if now - self.last_check >= RECHECK_SECONDS:  # a failed check is tried again after a pause
                self._schedule_check(pool)
            return  # nothing of a resumed run is fetched before its data set is known to be the same
        idle = not self.to_fetch and not self.gets  # nothing else to wait for: check at once
        if (self.recheck_due and (idle or now - self.last_check >= RECHECK_SECONDS)) or now >= self.next_periodic_check:
            self._schedule_check(pool)
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
            page = 1 if self.progress.total_pages is None else self.next_page
            self.gets[pool.submit(self.api.list_page, page)] = ("page", page)
            pages_in_flight += 1
            if self.progress.total_pages is None:
                break  # page 1 tells the total; nothing else can be planned before it answers
        if len(self.to_post) > 2 * self.settings.post_workers:
            return  # posting lags behind: stop fetching until it catches up, so batches do not pile up
        while len(self.gets) < capacity and self.to_fetch:
            animal_id = self.to_fetch.popleft()
            self.gets[pool.submit(_fetch, self.api, animal_id)] = ("detail", animal_id)

    def _make_batches(self, final: bool) -> None:
        if self.settings.dry_run:
            return  # a dry run keeps its animals fetched: nothing is sent, so nothing is batched
        size = self.settings.batch_size
        while len(self.unbatched) >= size or (final and self.unbatched):
            ids, self.unbatched = self.unbatched[:size], self.unbatched[size:]
            batch_id = self.journal.create_batch(self.run.id, ids)
            self.to_post.append(self.journal.batch(batch_id))

    def _due_posts(self) -> list[BatchRow]:
        """Batches to send now, journaled `withheld` in the caller's transaction: committed before they leave."""
        due = []
        while self.to_post and len(self.posts) + len(due) < self.settings.post_workers:
            batch = self.to_post.popleft()
            self.journal.mark_withheld(batch)
            due.append(self.journal.batch(batch.id))
        return due

    def _serve_releases(self) -> None:
        """Journal `sending` for each body about to leave, fsynced, then let them go: the one durable commit of a send.

        The POST threads wait meanwhile; if the commit fails they withhold their bodies (the batches stay
        `withheld`, provably unsent) and the JournalError ends the attempt. With no room left for the answers,
        they withhold them too, and sending stops as when _due_posts finds no room.
        """
        requests = self.desk.take()
        if not requests:
            return
        futures = {batch.id: future for future, batch in self.posts.items()}
        released: dict[Future[PostResult], BatchRow] = {}
        try:
            with self.journal.transaction(durable=True):  # on disk before the body leaves, power cut or not
                for request in requests:
                    future = futures[request.batch_id]
                    batch = self.posts[future]
                    if batch.state is not BatchState.SENDING:  # a retry after a release is journaled already
                        self.journal.mark_sending(batch)
                        released[future] = self.journal.batch(batch.id)
        except NoRoomForAnswer as exc:
            self.desk.answer(requests, False)  # each comes back never received: unsent, pending again
            self.no_room = exc
            return
        except BaseException:
            self.desk.answer(requests, False)
            raise
        self.posts.update(released)
        self.desk.answer(requests, True)

    # -- results ---------------------------------------------------------------------------------------------

    def _take_get(self, future: Future[Any], kind: str, key: int) -> None:
        try:
            result = future.result()
        except ApiUnreachable as exc:
            # Not this animal's fault: it stays discovered, and the run stops for a later resume.
            refused = isinstance(exc, CredentialRefused)
            self._count_retries(exc.retries)
            self.counters["error_credential_refused" if refused else "error_api_unreachable"] += 1
            self.unreachable = str(exc)
            self.refused = self.refused or (str(exc) if refused else None)
            return
        except FetchFailed as exc:
            self._count_retries(exc.retries)
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
            if not self.verified:  # a resume cannot go on without knowing the data set is the same
                self.checks_failed += 1
                self.last_check = time.monotonic()  # the next try waits RECHECK_SECONDS from this failure
                self.recheck_due = True  # and keeps the loop from ending before it
                if self.checks_failed >= CHECK_TRIES:
                    self.check_failed = (
                        f"page {key} could not be listed again to check the data set ({reason};"
                        f" {self.checks_failed} checks failed)"
                    )
            return
        if kind == "page":
            self.failed_pages[key] = reason
            self.log.warning("page_failed", page=key, reason=reason)
            return
        self.journal.record_fetch_failed(self.run.id, key, reason, attempts=attempts)
        self.progress.failed += 1
        self.recheck_due = True  # a listed id that stopped answering may mean the upstream restarted
        self.log.warning("retry_budget_exhausted", animal_id=key, reason=reason)

    def _difference(self, page: Page) -> str | None:
        """How this listing contradicts what the run journaled, or None: the total, or the baseline page's items."""
        total = self.progress.total_pages
        if total is not None and page.total_pages != total:
            fewer = "fewer pages: ids it listed are gone" if page.total_pages < total else "more pages"
            return f"total_pages was {total}, the API now says {page.total_pages} ({fewer})"
        if self.baseline is not None and self.baseline[0] == page.page and self.baseline[1] not in (None, page.digest):
            return f"page {page.page} now lists other animals under the same ids"
        return None

    def _upstream_changed(self, what: str) -> None:
        if self.changed is None:
            self.changed = what
            self.counters["upstream_changed"] += 1
            self.log.error("upstream_changed", change=what)

    def _checked(self, page: Page) -> None:
        self._count_retries(page.retries)
        what = self._difference(page)
        if what is not None:
            self._upstream_changed(what)
        else:
            self.verified = True

    def _listed(self, page: Page) -> None:
        self._count_retries(page.retries)
        what = self._difference(page)
        if what is not None:  # journal nothing of it: one run never mixes two data sets
            self._upstream_changed(what)
            return
        room = None if self.settings.limit is None else self.settings.limit - self.progress.discovered
        new_ids = self.journal.record_page(
            self.run.id, page.page, page.ids, page.total_pages, max_new=room, digest=page.digest,
            bad_items=page.bad_items,
        )
        for item in page.bad_items:
            self.counters["bad_listing_item"] += 1
            self.log.warning("bad_listing_item", page=page.page, item=item["item"], reason=item["reason"])
        self.listed.add(page.page)
        self.progress.pages_listed += 1
        self.progress.discovered += len(new_ids)
        self.progress.total_pages = page.total_pages
        if self.baseline is None or page.page < self.baseline[0]:
            self.baseline = (page.page, page.digest)
        self.to_fetch.extend(new_ids)

    def _fetched(self, fetched: Fetched) -> None:
        self._count_retries(fetched.retries)
        if fetched.transformed is None:
            self.journal.record_quarantined(self.run.id, fetched.animal_id, fetched.raw, fetched.reason or "", attempts=fetched.attempts)
            self.progress.quarantined += 1
            self.counters["quarantined"] += 1
            self.log.warning("record_quarantined", animal_id=fetched.animal_id, reason=fetched.reason)
            return
        self.journal.record_fetched(self.run.id, fetched.animal_id, fetched.raw, fetched.transformed, attempts=fetched.attempts)
        self.unbatched.append(fetched.animal_id)
        self.progress.fetched += 1

    def _take_post(self, batch: BatchRow, result: PostResult) -> None:
        self._count_retries(result.retries)
        was_in_doubt = batch.in_doubt_at is not None
        outcome = result.outcome
        self.counters[f"post_{outcome}"] += 1  # the outcome classes, journaled as counters for status and report
        if result.release is not None:
            self.counters[f"post_body_{result.release}"] += 1  # which 100-continue behaviour the run met
        blog = self.log.bind(batch_id=batch.id, animals=len(batch.ids), outcome=str(outcome))
        if outcome is PostOutcome.DELIVERED:
            self.journal.mark_posted(batch, result.status or 0, result.body or "")
            self.progress.posted += len(batch.ids)
            blog.info("batch_posted", status=result.status, resent=was_in_doubt)
        elif outcome is PostOutcome.NEVER_RECEIVED or result.status in AUTH_REFUSED:
            # The API never took this send (never received, or the credential refused); the run stops, and the
            # batch keeps the state it had before it.
            refused = result.status in AUTH_REFUSED
            self.counters["error_credential_refused" if refused else "error_api_unreachable"] += 1
            self.unreachable = result.error
            self.refused = self.refused or (result.error if refused else None)
            why = "was refused the credential" if refused else "never reached the API"
            if was_in_doubt:
                self.journal.mark_in_doubt(batch, f"{outcome}: the re-send {why}: {result.error}")
            else:
                self.journal.unsend(batch, f"{outcome}: {why}: {result.error}")
        elif outcome is PostOutcome.UNKNOWN:
            self.counters["batch_in_doubt"] += 1
            self.journal.mark_in_doubt(batch, f"{outcome}: {result.error}")
            blog.warning("batch_in_doubt", reason=result.error)
        elif was_in_doubt:
            if result.unread:  # the handler never saw the re-send: no new evidence either way
                reason = f"{outcome} on a re-send ({result.error}): still in doubt"
            else:
                # A refused re-send: on a strict API a repeat, so the first send was delivered; journaled at once.
                # Proof when the handler read it (100 Continue), the old inference when the server gave no sign.
                proof = "a repeat" if outcome is PostOutcome.REFUSED_AFTER_READING else "probably a repeat"
                reason = f"{outcome} on a re-send ({result.error}): {proof}, the first send was delivered"
                self.counters["resend_refused"] += 1
            self.journal.mark_in_doubt(batch, reason, status=result.status, body=result.body)
            blog.warning("batch_resend_refused", status=result.status, body=result.body)
        elif result.status in SPLIT_ON and len(batch.ids) > 1:
            self._split(batch, result)
            self.recheck_due = True  # ids the API no longer knows are refused too: the upstream may have restarted
        elif outcome is PostOutcome.REFUSED_AFTER_READING and (result.status or 0) >= 500:
            # A handler that read the batch failed: a strict API may have taken the ids before its failure.
            self.counters["batch_in_doubt"] += 1
            self.journal.mark_in_doubt(batch, f"{outcome}: {result.error}", status=result.status, body=result.body)
            blog.warning("batch_in_doubt", status=result.status, body=result.body)
        else:
            self.journal.mark_failed(batch, result.status, result.body, f"{outcome}: {result.error or 'refused'}")
            self.progress.failed += len(batch.ids)
            self.recheck_due = True  # as for a failed detail: a refused batch may mean the upstream restarted
            self.counters[f"batch_failed_http_{result.status}"] += 1
            blog.error("batch_failed", status=result.status, body=result.body)

    def _answers_not_journaled(self, results: list[tuple[BatchRow, PostResult]], exc: JournalError) -> JournalError:
        """The API answered but the journal cannot say so: name each batch and its answer, so a person can settle
        it; left `sending`, the batch is in doubt at the next resume."""
        said = []
        for batch, result in results:
            answer = f"HTTP {result.status} {(result.body or '')[:80]!r}" if result.status else f"no answer ({result.error})"
            said.append(f"batch {batch.id} ({len(batch.ids)} animals): the API said {answer}")
            self.log.error(
                "batch_answer_not_journaled", batch_id=batch.id, animals=len(batch.ids), status=result.status,
                body=(result.body or "")[:300], error=str(exc),
            )
        left = "it stays" if len(said) == 1 else "they stay"
        return JournalError(f"{exc}; could not journal the answer to {'; '.join(said)}; {left} in doubt for the next resume")

    def _split(self, batch: BatchRow, result: PostResult) -> None:
        """A batch refused for a malformed record: re-send it in halves, so only the bad record(s) end up failed."""
        self.journal.mark_refused_for_split(batch, result.status, result.body, result.error or "refused")
        middle = len(batch.ids) // 2
        halves = [self.journal.create_batch(self.run.id, part) for part in (batch.ids[:middle], batch.ids[middle:])]
        self.to_post.extendleft(self.journal.batch(batch_id) for batch_id in reversed(halves))
        self.counters[f"batch_split_http_{result.status}"] += 1
        self.log.warning("batch_split", batch_id=batch.id, status=result.status, into=halves, body=result.body)

    def _count_retries(self, kinds: Sequence[str]) -> None:
        for kind in kinds:
            self.counters[f"retry_{kind}"] += 1
        self.progress.retries += len(kinds)

    # -- the loop --------------------------------------------------------------------------------------------

    def execute(self) -> RunResult:
        """Run until done, stopped, or the API is unreachable; the journal is consistent whenever this returns."""
        self._prepare()
        started = time.monotonic()
        self.log.info("run_started", attempt=self.run.attempts, base_url=redact_url(self.settings.base_url))
        get_pool = ThreadPoolExecutor(self.settings.workers, thread_name_prefix="get")
        post_pool = ThreadPoolExecutor(self.settings.post_workers, thread_name_prefix="post")
        try:
            self._loop(get_pool, post_pool)
        except JournalError as exc:
            self.desk.close()  # a body not yet released is withheld now: its batch stays provably unsent
            post_pool.shutdown(wait=True)  # the POSTs out still get answers the journal cannot take: name them
            released = [(batch, f.result()) for f, batch in self.posts.items() if batch.state is BatchState.SENDING]
            if released:
                raise self._answers_not_journaled(released, exc) from None
            raise
        finally:
            self.desk.close()  # never leave a POST thread waiting for a coordinator that has gone
            # GETs are safe to drop: cut those in flight, cancel the queued ones, and do not wait for their threads.
            self.api.abandon_gets()
            get_pool.shutdown(wait=False, cancel_futures=True)
            post_pool.shutdown(wait=True)
        return self._finish(time.monotonic() - started)

    def _loop(self, get_pool: ThreadPoolExecutor, post_pool: ThreadPoolExecutor) -> None:
        while True:
            self._serve_releases()  # first: a POST thread is waiting with the API's `100 Continue` in hand
            stopping = self._halted()
            step_started = time.monotonic()
            if stopping and self.gets:  # dropped unread: a late result must not touch the journal
                self.api.abandon_gets()
                self.gets.clear()
            answered = [future for future in self.posts if future.done()]
            if answered:  # their own commit: nothing else in the step can delay it or take it down with it
                results = [(self.posts.pop(future), future.result()) for future in answered]
                try:
                    with self.journal.transaction():
                        for batch, result in results:
                            self._take_post(batch, result)
                except JournalError as exc:
                    released = [(batch, result) for batch, result in results if batch.state is BatchState.SENDING]
                    if not released:  # no body of theirs left: they stay withheld, unsent for the next resume
                        raise
                    raise self._answers_not_journaled(released, exc) from None
            with self.journal.transaction():
                self._collect_gets()
                stopping = stopping or self._halted()
                if not stopping:
                    self._schedule_gets(get_pool)
                listing_done = self._listing_done()
                fetching_done = listing_done and not self.to_fetch and not self.gets
                self._make_batches(final=fetching_done and not stopping)
                self.journal.add_counters(self.run.id, self.counters)
                self.counters.clear()
            due = []
            if not stopping and self.verified and self.to_post and len(self.posts) < self.settings.post_workers:
                try:
                    with self.journal.transaction():  # not fsynced: lost to a power cut, the batch is just pending
                        due = self._due_posts()
                except NoRoomForAnswer as exc:  # send nothing more; the answers in flight still have room
                    self.no_room = exc
            for batch in due:  # committed as `withheld`: a kill before _serve_releases() leaves them unsent
                records = self.journal.batch_records(batch)
                self.posts[post_pool.submit(self.api.post_batch, records, self.desk.gate(batch.id))] = batch
            if self.on_progress:
                self.on_progress(self.progress)
            if (stopping or self.no_room is not None) and not self.posts:
                if self.no_room is not None:
                    raise self.no_room  # no room to end the run in the journal either: one line, exit 2
                return  # in-flight GETs are dropped: their animals stay discovered and are fetched next time
            if not stopping and fetching_done and not self.posts and not self.to_post and not self.recheck_due:
                return
            pending = list(self.gets) + list(self.posts)
            if pending:
                wait([*pending, self.desk.wakeup], timeout=0.5, return_when=FIRST_COMPLETED)
            # A release request cuts the pause short: its POST holds the API's `100 Continue` while it waits.
            wait([self.desk.wakeup], timeout=max(0.0, STEP_SECONDS - (time.monotonic() - step_started)))

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
            "failed_pages": sorted(self.failed_pages),
        }
        if self.refused is not None:
            state, kind = RunState.INTERRUPTED, RunOutcome.CREDENTIAL_REFUSED
            message = (
                f"the Animals API refused the credential ({self.refused}); the journal is consistent:"
                " pass a valid one and run `animal-sync resume`"
            )
        elif self.changed is not None:
            state, kind = RunState.INTERRUPTED, RunOutcome.UPSTREAM_CHANGED
            outcome["upstream_changed"] = self.changed
            message = (
                f"the upstream data set changed under this run: {self.changed}. Its ids now name other animals"
                " than the journaled ones, so the run stopped instead of mixing two data sets (nothing more was"
                " fetched or posted). Start over with `animal-sync run --abandon`, or `animal-sync resume` if"
                " the old data set is served again"
            )
        elif self.unreachable is not None:
            state, kind = RunState.INTERRUPTED, RunOutcome.UNREACHABLE
            message = (
                f"the Animals API stopped answering ({self.unreachable}); the journal is consistent:"
                " run `animal-sync resume` when it is back"
            )
        elif self.stop.is_set():
            state, kind = RunState.INTERRUPTED, RunOutcome.STOPPED
            message = "stopped; the journal is consistent: run `animal-sync resume` to continue"
        elif self.check_failed is not None:
            state, kind = RunState.INTERRUPTED, RunOutcome.CHECK_FAILED
            message = f"{self.check_failed}; nothing was fetched or posted: run `animal-sync resume` to try again"
        elif self.progress.total_pages is None:  # page 1 never answered with a listing: nothing was synced
            state, kind = RunState.INTERRUPTED, RunOutcome.NEVER_LISTED
            reason = self.failed_pages.get(1, "no answer")
            message = f"the listing never started: page 1 could not be listed ({reason}); run `animal-sync resume` to try again"
        else:
            unfinished = [AnimalState.QUARANTINED, AnimalState.FAILED, AnimalState.BATCHED, AnimalState.DISCOVERED]
            if not self.settings.dry_run:
                unfinished.append(AnimalState.FETCHED)
            # A batch answered 2xx only after a doubt went out at least once: the audit's verdict, and so ours.
            resent = [batch.id for batch in unsettled_resends(self.journal, run_id)]
            bad_items = len(self.journal.bad_listing_items(run_id))
            exceptions = (
                sum(counts.get(state, 0) for state in unfinished)
                + len(in_doubt) + len(self.failed_pages) + bad_items + len(resent)
            )
            state = RunState.FINISHED
            kind = RunOutcome.CLEAN if exceptions == 0 else RunOutcome.EXCEPTIONS
            message = _summary(counts, in_doubt, self.failed_pages, bad_items, self.settings.dry_run, resent)
        outcome["message"] = message
        self.journal.end_run(run_id, state, outcome)
        self.log.info("run_finished", state=str(state), outcome=str(kind), elapsed=round(elapsed, 3), **{
            f"animals_{k}": v for k, v in counts.items()
        })
        return RunResult(run_id, state, kind, message, counts, in_doubt)


def _summary(
    counts: dict[str, int],
    in_doubt: tuple[int, ...],
    failed_pages: dict[int, str],
    bad_items: int,
    dry_run: bool,
    resent: list[int],
) -> str:
    posted = counts.get(AnimalState.POSTED, 0)
    parts = [f"{posted} animals posted" if not dry_run else f"dry run: {counts.get(AnimalState.FETCHED, 0) + counts.get(AnimalState.BATCHED, 0)} animals fetched and transformed, none posted"]
    for state in (AnimalState.QUARANTINED, AnimalState.FAILED):
        if counts.get(state):
            parts.append(f"{counts[state]} {state}")
    if in_doubt:
        parts.append(f"{len(in_doubt)} batches in doubt ({', '.join(map(str, in_doubt[:10]))})")
    if failed_pages:
        parts.append(f"{len(failed_pages)} pages could not be listed")
    if bad_items:
        parts.append(f"{bad_items} listing items set aside (an id the journal cannot hold)")
    if resent:
        parts.append(f"{len(resent)} batches posted at least once after doubt ({', '.join(map(str, resent[:10]))})")
    tail = "" if len(parts) == 1 else "; run `animal-sync audit` for details, `animal-sync resume` to retry"
    if in_doubt or resent:
        tail += ", `animal-sync settle` to decide what is in doubt"
    return ", ".join(parts) + tail


def start_run(
    settings: Settings,
    *,
    abandon: bool = False,
    stop: threading.Event | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Start a new run in the journal; refuse (JournalError) if an unfinished one exists, unless abandoning it."""
    journal = Journal.open(settings.journal, exclusive=True)
    try:
        last = journal.last_run()
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
        run = journal.resume_run(last.id)
        return _execute(journal, run, settings, stop, on_progress)
    finally:
        journal.close()


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
