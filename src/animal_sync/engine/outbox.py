"""The POST side of one attempt: batches waiting to be sent, the POSTs out, their bodies' release, and each answer's
verdict applied to the journal.

It runs on the coordinator thread only (sync.py calls it), so the coordinator stays the journal's only writer.
What an answer means is decided by `outcomes.classify`; the Outbox only applies it.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..client.api import AnimalsApi
from .attempt import Progress, count_retries
from ..config import Settings
from ..errors import JournalError
from ..journal import BatchRow, BatchState, Journal, NoRoomForAnswer
from ..client.outcomes import Action, PostResult, Verdict, classify, proven_repeat
from .release import ReleaseDesk

__all__ = ["Outbox"]


class Outbox:
    """The batches to send and the POSTs out; `counters` and `progress` are the coordinator's, shared."""

    def __init__(
        self, journal: Journal, run_id: int, settings: Settings, counters: Counter[str], progress: Progress, log: Any
    ) -> None:
        self.journal, self.run_id, self.settings = journal, run_id, settings
        self.counters, self.progress, self.log = counters, progress, log
        self.to_post: deque[BatchRow] = deque()
        self.posts: dict[Future[PostResult], BatchRow] = {}  # each POST out and its batch as last journaled
        self.desk = ReleaseDesk()  # where POST threads ask for their body's release to be journaled
        self.no_room: NoRoomForAnswer | None = None  # sending stopped: the journal could not record more answers
        self._built: dict[int, float] = {}  # batch id -> when this attempt built it (monotonic)

    def built_at(self, batch: BatchRow) -> float:
        """When this attempt built the batch; one journaled before it counts as built before the attempt began."""
        return self._built.get(batch.id, float("-inf"))

    def _build(self, ids: list[int]) -> int:
        batch_id = self.journal.create_batch(self.run_id, ids)
        self._built[batch_id] = time.monotonic()
        return batch_id

    def queue_journaled(self) -> None:
        """Queue the batches the journal holds unsent, and with `resend_in_doubt` those in doubt (at-least-once).

        An in-doubt batch whose re-send a handler read and refused is a proven repeat: it is held, not re-sent, since
        every further re-send would be one more refusal and no new evidence; it waits for `settle`.
        """
        self.to_post.extend(self.journal.batches(self.run_id, BatchState.PENDING))
        if self.settings.resend_in_doubt:
            for batch in self.journal.batches(self.run_id, BatchState.IN_DOUBT):
                if proven_repeat(batch.last_error):
                    self.log.warning(
                        "batch_held", batch_id=batch.id, animals=len(batch.ids),
                        reason="a proven repeat (its re-send was read and refused): not re-sent; settle it",
                    )
                    continue
                self.log.warning("batch_resending", batch_id=batch.id, animals=len(batch.ids), reason="in doubt: at-least-once")
                self.to_post.append(batch)

    def make_batches(self, ids: list[int], final: bool) -> list[int]:
        """Journal and queue full batches of fetched `ids` (with `final`, the rest too); returns the ids left over."""
        if self.settings.dry_run:
            return ids  # a dry run keeps its animals fetched: nothing is sent, so nothing is batched
        size = self.settings.batch_size
        while len(ids) >= size or (final and ids):
            batch_ids, ids = ids[:size], ids[size:]
            self.to_post.append(self.journal.batch(self._build(batch_ids)))
        return ids

    def has_room(self) -> bool:
        """Whether another POST may leave now."""
        return bool(self.to_post) and len(self.posts) < self.settings.post_workers

    def send(self, pool: ThreadPoolExecutor, api: AnimalsApi, due: list[BatchRow]) -> None:
        """Hand each batch, journaled `withheld`, to a POST thread; its body waits for the release desk."""
        for batch in due:
            records = self.journal.batch_records(batch)
            gate = self.desk.gate(batch.id)
            self.posts[pool.submit(api.post_batch, records, gate.ask, gate.left)] = batch

    def answered(self) -> list[tuple[BatchRow, PostResult]]:
        """The POSTs that have their answer, taken out of flight."""
        done = [future for future in self.posts if future.done()]
        return [(self.posts.pop(future), future.result()) for future in done]

    def released(self) -> list[tuple[BatchRow, PostResult]]:
        """Every POST out whose body left, with its answer (waits for them): for a journal that failed."""
        return [(batch, f.result()) for f, batch in self.posts.items() if batch.state is BatchState.SENDING]

    def due(self, covered: Callable[[float], bool] = lambda built_at: True) -> list[BatchRow]:
        """Batches to send now, journaled `withheld` in the caller's transaction: committed before they leave.

        Only those `covered` (given when each was built) by a check of the data set: the rest wait, in order.
        """
        due = []
        while self.to_post and len(self.posts) + len(due) < self.settings.post_workers:
            if not covered(self.built_at(self.to_post[0])):
                break
            batch = self.to_post.popleft()
            self.journal.mark_withheld(batch)
            due.append(self.journal.batch(batch.id))
        return due

    def serve_releases(self) -> None:
        """Journal `sending` for each body about to leave, fsynced, then let them go: the one durable commit of a send.

        The POST threads wait meanwhile; if the commit fails they withhold their bodies (the batches stay
        `withheld`, provably unsent) and the JournalError ends the attempt. With no room left for the answers,
        they withhold them too, and sending stops as when `due` finds no room.
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
        self.desk.await_left(requests)  # the bodies reach their sockets now, not when the GIL next comes round

    def take(self, batch: BatchRow, result: PostResult) -> Verdict:
        """Count what the answer was, then apply what it means (decided by `outcomes.classify`); the verdict tells
        the coordinator whether the run must stop."""
        count_retries(self.counters, self.progress, result.retries)
        self.counters[f"post_{result.outcome}"] += 1  # the outcome classes, journaled as counters for status and report
        if result.release is not None:
            self.counters[f"post_body_{result.release}"] += 1  # which 100-continue behaviour the run met
        verdict = classify(result, batch)
        self._apply(batch, result, verdict)
        return verdict

    def _apply(self, batch: BatchRow, result: PostResult, verdict: Verdict) -> None:
        """Journal the verdict on one batch; the only place a POST's answer changes the journal."""
        self.counters.update(verdict.counters)
        blog = self.log.bind(batch_id=batch.id, animals=len(batch.ids), outcome=str(result.outcome))
        status, body, reason = result.status, result.body, verdict.reason or ""
        match verdict.action:
            case Action.POSTED:
                self.journal.mark_posted(batch, status or 0, body or "", result.assumption)
                self.progress.posted += len(batch.ids)
                blog.info("batch_posted", status=status, resent=batch.in_doubt_at is not None)
            case Action.UNSEND:
                self.journal.unsend(batch, reason, result.assumption)
            case Action.IN_DOUBT if verdict.keep_answer:
                self.journal.mark_in_doubt(batch, reason, status=status, body=body)
                blog.warning(verdict.event or "batch_in_doubt", status=status, body=body)
            case Action.IN_DOUBT:
                self.journal.mark_in_doubt(batch, reason)
                if verdict.event is not None:
                    blog.warning(verdict.event, reason=result.error)
            case Action.SPLIT:
                self._split(batch, result)
            case Action.FAILED:
                self.journal.mark_failed(batch, status, body, reason, result.assumption)
                self.progress.failed += len(batch.ids)
                blog.error("batch_failed", status=status, body=body)

    def answers_not_journaled(self, results: list[tuple[BatchRow, PostResult]], exc: JournalError) -> JournalError:
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
        halves = [self._build(part) for part in (batch.ids[:middle], batch.ids[middle:])]
        self.to_post.extendleft(self.journal.batch(batch_id) for batch_id in reversed(halves))
        self.log.warning("batch_split", batch_id=batch.id, status=result.status, into=halves, body=result.body)
