"""What a POST's answer means: its outcome class, and the verdict on its batch, decided but never applied.

Like urllib3's `Retry`, `classify` is a pure value-returning policy: the coordinator (sync.py) applies the
`Verdict` to the journal, so the decision can be read and tested in one table without a server or a journal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .continue100 import BodyRelease

__all__ = [
    "AUTH_REFUSED",
    "SPLIT_ON",
    "Action",
    "Halt",
    "PostOutcome",
    "PostResult",
    "PROVEN_REPEAT",
    "READ_RELEASES",
    "Verdict",
    "classify",
    "classify_answer",
    "proven_repeat",
]

AUTH_REFUSED = frozenset({401, 403})  # the credential, not the request, is wrong: nothing will pass until it changes
SPLIT_ON = frozenset({400, 422})  # answers that refuse a batch for its content: bisect it to find the culprit


class PostOutcome(StrEnum):
    """A POST's fate, named the same in the journal, the logs, `status`, `audit` and the HTML report."""

    DELIVERED = "delivered"  # 2xx
    NEVER_RECEIVED = "never_received"  # no connection, or every try's body withheld: the API never saw it
    REFUSED_BEFORE_READING = "refused_before_reading"  # a final answer before the handler read the batch
    REFUSED_AFTER_READING = "refused_after_reading"  # a final 4xx/5xx from a handler that read the batch
    UNKNOWN = "unknown"  # sent, answer lost (read timeout, dropped connection) or a redirect: maybe delivered


@dataclass(frozen=True)
class PostResult:
    outcome: PostOutcome
    status: int | None
    body: str | None
    error: str | None
    retries: tuple[str, ...] = ()
    release: BodyRelease | None = None  # the last try's body: after 100 Continue, after the wait, at once, withheld
    # A delivery (or a refusal) that rests on an assumption, not on proof: a 5xx to a body sent with no sign the
    # handler read it, re-sent because such a 5xx is taken to come before the handler. None when all is proven.
    assumption: str | None = None

    @property
    def unread(self) -> bool:
        """Proof that no handler saw the last try: its body was withheld, so a refusal says nothing of the batch."""
        return self.release is BodyRelease.WITHHELD


READ_RELEASES = frozenset({BodyRelease.AFTER_CONTINUE, BodyRelease.LATE_CONTINUE})  # the handler asked for the body


def classify_answer(status: int, release: BodyRelease | None) -> PostOutcome:
    """What a final answer says about the batch, given what became of its body on that try.

    A body withheld was never read, whatever the answer: a 2xx before the body is no delivery. A redirect is never
    followed for a POST (the batch would go unguarded, or turn into a GET); given after the body left, it may
    still mean the server processed it (a 303 usually does), so it is unknown. Without 100-continue evidence
    (`release` None, AFTER_WAIT or AT_ONCE) the old rule stands: the API's 5xx come before its handler (which is
    why they are retried), while a 4xx judges the batch's content.
    """
    if release is BodyRelease.WITHHELD:
        return PostOutcome.REFUSED_BEFORE_READING
    if 200 <= status < 300:
        return PostOutcome.DELIVERED
    if 300 <= status < 400:
        return PostOutcome.UNKNOWN
    if release in READ_RELEASES or status < 500:
        return PostOutcome.REFUSED_AFTER_READING
    return PostOutcome.REFUSED_BEFORE_READING


class Action(StrEnum):
    """What becomes of the batch in the journal."""

    POSTED = "posted"  # delivered: its animals are posted
    UNSEND = "unsend"  # a first send the API never took: pending again, provably unsent
    IN_DOUBT = "in_doubt"  # maybe delivered: a person or an at-least-once re-send decides
    SPLIT = "split"  # refused for its content: re-sent in halves to find the culprit
    FAILED = "failed"  # refused: its animals failed


class Halt(StrEnum):
    """Why the answer stops the run (nothing more is sent or fetched)."""

    UNREACHABLE = "unreachable"  # the API never took the send
    CREDENTIAL_REFUSED = "credential_refused"  # 401/403: nothing passes until the credential changes


PROVEN_REPEAT = "a repeat, the first send was delivered"  # how a refused re-send's doubt reason ends, when proven


def proven_repeat(reason: str | None) -> bool:
    """Whether an in-doubt batch's journaled reason says a re-send of it was refused after the handler read it.

    Such a batch is not re-sent again: on a strict API every re-send is one more refusal, and proves nothing new.
    """
    return (reason or "").endswith(f"): {PROVEN_REPEAT}")


class Sent(Protocol):
    """What the policy reads of a batch: its size, and whether a send of it was ever in doubt."""

    @property
    def ids(self) -> Sequence[int]: ...

    @property
    def in_doubt_at(self) -> str | None: ...


@dataclass(frozen=True)
class Verdict:
    """The decision on one answered batch; sync.py applies it, word for word, to the journal and the logs."""

    action: Action
    reason: str | None = None  # journaled with the batch (None for POSTED and SPLIT: the answer says it all)
    halt: Halt | None = None
    keep_answer: bool = False  # the answer's status and body are journaled with the doubt
    counters: tuple[str, ...] = ()  # the verdict's own counters (the answer's outcome is counted apart)
    event: str | None = None  # the log event that names it, if any


def classify(result: PostResult, batch: Sent) -> Verdict:
    """Decide what `result` means for `batch`; pure, so every branch is one row of a table test."""
    outcome, error, status = result.outcome, result.error, result.status
    resent = batch.in_doubt_at is not None
    if outcome is PostOutcome.DELIVERED:
        return Verdict(Action.POSTED, event="batch_posted")
    if outcome is PostOutcome.NEVER_RECEIVED or status in AUTH_REFUSED:
        # The API never took this send; the run stops, and the batch keeps the state it had before it.
        refused = status in AUTH_REFUSED
        halt = Halt.CREDENTIAL_REFUSED if refused else Halt.UNREACHABLE
        counter = "error_credential_refused" if refused else "error_api_unreachable"
        why = "was refused the credential" if refused else "never reached the API"
        if resent:
            return Verdict(Action.IN_DOUBT, f"{outcome}: the re-send {why}: {error}", halt, counters=(counter,))
        return Verdict(Action.UNSEND, f"{outcome}: {why}: {error}", halt, counters=(counter,))
    if outcome is PostOutcome.UNKNOWN:
        return Verdict(
            Action.IN_DOUBT, f"{outcome}: {error}", keep_answer=status is not None, counters=("batch_in_doubt",),
            event="batch_in_doubt",
        )
    if resent:
        if result.unread or (status or 0) < 500:
            # The handler never saw the re-send, or judged its content (a 4xx, which the first send carried too):
            # no evidence of a repeat either way. Only a handler's failure (a strict API's 500) tells a repeat.
            reason, counters = f"{outcome} on a re-send ({error}): still in doubt", ()
        else:
            # A refused re-send: on a strict API a repeat, so the first send was delivered; journaled at once.
            # Proof when the handler read it (100 Continue), the old inference when the server gave no sign.
            proof = PROVEN_REPEAT if outcome is PostOutcome.REFUSED_AFTER_READING else f"probably {PROVEN_REPEAT}"
            reason = f"{outcome} on a re-send ({error}): {proof}"
            counters = ("resend_refused",)
        return Verdict(Action.IN_DOUBT, reason, keep_answer=True, counters=counters, event="batch_resend_refused")
    if status in SPLIT_ON and len(batch.ids) > 1:
        return Verdict(Action.SPLIT, counters=(f"batch_split_http_{status}",), event="batch_split")
    if outcome is PostOutcome.REFUSED_AFTER_READING and (status or 0) >= 500:
        # A handler that read the batch failed: a strict API may have taken the ids before its failure.
        return Verdict(
            Action.IN_DOUBT, f"{outcome}: {error}", keep_answer=True, counters=("batch_in_doubt",), event="batch_in_doubt"
        )
    return Verdict(
        Action.FAILED, f"{outcome}: {error or 'refused'}", counters=(f"batch_failed_http_{status}",), event="batch_failed"
    )
