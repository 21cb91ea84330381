"""A person settles what the journal cannot prove: an in-doubt batch judged delivered, or queued to be sent again.

A batch whose POST outcome was lost stays in doubt until someone decides; against a strict API its re-send is
refused, so no resume can end the doubt. `settle` journals the decision with who made it, when and why, and
applies it through the journal's state machine. Every batch named is checked before any is changed, so a
settlement of several batches happens whole or not at all.

The rule the audit applies (`journal.covers`): a batch answered 2xx after having been in doubt went out at least once,
perhaps twice; it counts as settled only when a person said so, either by judging it delivered after the fact
or by having asked for the re-send that was then answered 2xx. A re-send decision answers one doubt: a batch
that went in doubt again after it, and was re-sent once more without a person, is not covered.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import JournalError
from ..journal import BatchRow, BatchState, Decision, Journal, RunRow, RunState, SettlementRow, covers, select_run

__all__ = [
    "BlankReason",
    "NoResendHere",
    "NotSettleable",
    "NothingInDoubt",
    "SettleError",
    "UnknownBatch",
    "covers",
    "current_user",
    "open_for_settling",
    "settle",
    "standing",
    "unsettled_resends",
]


class SettleError(JournalError):
    """A settlement the journal refuses; nothing was changed."""


class UnknownBatch(SettleError):
    def __init__(self, run_id: int, batch_id: int) -> None:
        self.run_id, self.batch_id = run_id, batch_id
        super().__init__(f"run {run_id} has no batch {batch_id}")


class NotSettleable(SettleError):
    """The batch is not in doubt (or, for a judgement of delivery, not an unsettled batch posted after doubt)."""

    def __init__(self, batch_id: int, state: BatchState, decision: Decision, why: str) -> None:
        self.batch_id, self.state, self.decision = batch_id, state, decision
        super().__init__(f"batch {batch_id} cannot be settled ({decision}): {why}")


class NothingInDoubt(SettleError):
    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} has no batch in doubt")


class NoResendHere(SettleError):
    """A re-send is queued for the next `resume`, which continues only the journal's last run, and not an abandoned
    one: for any other run the batch would wait for ever while the reports said it was queued."""

    def __init__(self, run_id: int, why: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} cannot take a re-send: {why}")


class BlankReason(SettleError):
    def __init__(self) -> None:
        super().__init__("a settlement needs a reason: say why, in words a colleague can check later")


def current_user() -> str:
    """The OS user making the decision; the uid when the name cannot be found (a container without /etc/passwd)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def open_for_settling(path: str | os.PathLike[str]) -> Journal:
    """The journal, taken from any live writer's reach: settling beside a running sync would race its decisions."""
    if not Path(path).is_file():
        raise JournalError(f"no journal at {path}")
    return Journal.open(path, exclusive=True)


def _check(journal: Journal, run: RunRow, batch_id: int, decision: Decision) -> BatchRow:
    """The batch, if this decision may settle it; else a typed error saying why not."""
    try:
        batch = journal.batch(batch_id)
    except JournalError:
        raise UnknownBatch(run.id, batch_id) from None
    if batch.run_id != run.id:
        raise UnknownBatch(run.id, batch_id)
    if batch.state is BatchState.IN_DOUBT:
        return batch
    if decision is Decision.DELIVERED and batch.state is BatchState.POSTED and batch.in_doubt_at is not None:
        settlement = journal.settlements(run.id).get(batch.id)
        if settlement is None or not covers(settlement, batch):
            return batch  # answered 2xx after a doubt: a person may accept that it went out at least once
        raise NotSettleable(
            batch.id, batch.state, decision,
            f"already settled ({settlement.decision}) by {settlement.user} at {settlement.settled_at}",
        )
    if batch.state is BatchState.POSTED and batch.in_doubt_at is not None:
        why = "it was re-sent after a doubt and answered 2xx; only a judgement that it was delivered can settle it"
    elif batch.state is BatchState.SENDING:
        why = "its POST is in flight, or was when its process died (a resume names it in doubt first)"
    else:
        why = f"it is {batch.state}, not in doubt"
    raise NotSettleable(batch.id, batch.state, decision, why)


def settle(
    journal: Journal,
    decision: Decision,
    reason: str,
    batch_ids: Sequence[int] | None = None,
    *,
    run_id: int | None = None,
    user: str | None = None,
) -> list[SettlementRow]:
    """Settle the named batches of the run (the last one unless `run_id`), or with `batch_ids=None` every batch
    of it in doubt; all are checked before any is changed, and all are journaled in one transaction."""
    reason = " ".join(reason.split())  # one line, as every report shows it
    if not reason:
        raise BlankReason()
    run = select_run(journal, run_id)
    if decision is Decision.RESEND:
        last = journal.last_run()
        if last is None or last.id != run.id:
            raise NoResendHere(run.id, f"a resume continues only the journal's last run ({last.id if last else '-'})")
        if run.state is RunState.ABANDONED:
            raise NoResendHere(run.id, "it was abandoned, and a resume does not continue an abandoned run")
    if batch_ids is None:
        batches = journal.batches(run.id, BatchState.IN_DOUBT)
        if not batches:
            raise NothingInDoubt(run.id)
    else:
        batches = [_check(journal, run, batch_id, decision) for batch_id in dict.fromkeys(batch_ids)]
    who = user or current_user()
    with journal.transaction(durable=True):  # a person's decision must survive a power cut
        return [journal.record_settlement(batch, decision, reason, who) for batch in batches]
