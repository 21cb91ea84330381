"""The journal's row states and the only legal transitions between them, as values a test can read."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from ..errors import JournalError

__all__ = [
    "ANIMAL_TRANSITIONS",
    "BATCH_TRANSITIONS",
    "AnimalState",
    "BatchState",
    "Decision",
    "IllegalTransition",
    "JournalChanged",
    "RunState",
    "check_animal_transition",
    "check_batch_transition",
]

class AnimalState(StrEnum):
    DISCOVERED = "discovered"  # listed on a page; detail not fetched yet
    FETCHED = "fetched"  # detail fetched and transformed; waiting for a batch
    QUARANTINED = "quarantined"  # detail fetched but malformed; kept with its reason
    FAILED = "failed"  # detail unobtainable, or its batch was refused with 4xx
    BATCHED = "batched"  # carried by a batch not (yet) answered 2xx
    POSTED = "posted"  # carried by a batch answered 2xx
    SETTLED = "settled"  # carried by an in-doubt batch a person judged delivered (`animal-sync settle --delivered`)
    UNCHANGED = "unchanged"  # --incremental: fetched, and the same record an earlier run delivered (pointer kept)


class BatchState(StrEnum):
    PENDING = "pending"  # built, never sent
    WITHHELD = "withheld"  # its POST is out with the body held back (awaiting 100 Continue): provably not sent yet
    SENDING = "sending"  # journaled (fsynced) as its body is released; found at start-up it means "outcome unknown"
    POSTED = "posted"  # answered 2xx
    FAILED = "failed"  # answered 4xx (or 5xx past the retry budget): nothing delivered
    IN_DOUBT = "in_doubt"  # sent, outcome unknown (read timeout, dropped connection, killed mid-POST)
    SETTLED = "settled"  # was in doubt; a person judged it delivered, with a reason (see the settlements table)


class Decision(StrEnum):
    """What a person decided about a batch the journal cannot prove delivered."""

    DELIVERED = "delivered"  # it arrived (checked downstream, or a strict API refused its re-send)
    RESEND = "resend"  # it did not arrive: queue it for the next resume, even one that holds in-doubt batches


class RunState(StrEnum):
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    ABANDONED = "abandoned"


A, B = AnimalState, BatchState

# The only legal transitions. Quarantined and failed animals go back to discovered when a resume retries them.
ANIMAL_TRANSITIONS: Mapping[AnimalState, frozenset[AnimalState]] = {
    A.DISCOVERED: frozenset({A.FETCHED, A.QUARANTINED, A.FAILED, A.UNCHANGED}),
    A.FETCHED: frozenset({A.BATCHED}),
    A.QUARANTINED: frozenset({A.DISCOVERED}),
    A.FAILED: frozenset({A.DISCOVERED}),
    A.BATCHED: frozenset({A.POSTED, A.FAILED, A.FETCHED, A.SETTLED}),  # fetched: re-batched after a refused batch is split
    A.POSTED: frozenset(),
    A.SETTLED: frozenset(),
    A.UNCHANGED: frozenset(),
}
BATCH_TRANSITIONS: Mapping[BatchState, frozenset[BatchState]] = {
    B.PENDING: frozenset({B.WITHHELD}),
    # sending: the body is released. The others are answers (or a resume) while no try's body ever left: pending
    # (never reached), failed (refused before reading), in_doubt (a re-send that never left stays as doubtful as it
    # was), posted (a 2xx before the body: the API's word is taken).
    B.WITHHELD: frozenset({B.SENDING, B.PENDING, B.FAILED, B.IN_DOUBT, B.POSTED}),
    B.SENDING: frozenset({B.POSTED, B.FAILED, B.IN_DOUBT, B.PENDING}),  # pending: the API was never reached
    # withheld: a re-send (at-least-once), only when the operator allows it; settled or pending: a person's decision
    B.IN_DOUBT: frozenset({B.WITHHELD, B.SETTLED, B.PENDING}),
    B.POSTED: frozenset(),
    B.FAILED: frozenset(),
    B.SETTLED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the state machine forbids: a bug in the caller, never a data problem."""


class JournalChanged(IllegalTransition, JournalError):
    """A row was not in the state this process last wrote: something else changed the journal under it.

    With the writer's lock that means a second process writing without it; it is reported as one line (a
    JournalError), since no retry in this process can make its view of the journal true again.
    """



def check_animal_transition(source: AnimalState, target: AnimalState) -> None:
    """Raise IllegalTransition unless `ANIMAL_TRANSITIONS` allows it: the journal asks before every animal write."""
    if target not in ANIMAL_TRANSITIONS[source]:
        raise IllegalTransition(f"animal {source} -> {target}")


def check_batch_transition(source: BatchState, target: BatchState) -> None:
    """Raise IllegalTransition unless `BATCH_TRANSITIONS` allows it: the journal asks before every batch write."""
    if target not in BATCH_TRANSITIONS[source]:
        raise IllegalTransition(f"batch {source} -> {target}")
