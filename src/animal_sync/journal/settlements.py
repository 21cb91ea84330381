"""Whether a person's settlement still accounts for a batch: the rule `settle`, the audit and the engine share.

A batch answered 2xx after having been in doubt went out at least once, perhaps twice; it counts as settled only
when a person said so, either by judging it delivered after the fact or by having asked for the re-send that was
then answered 2xx. A re-send decision answers one doubt: a batch that went in doubt again after it, and was
re-sent once more without a person, is not covered.
"""

from __future__ import annotations

from .journal import Journal
from .rows import BatchRow, SettlementRow
from .states import BatchState, Decision

__all__ = ["covers", "standing", "unsettled_resends"]


def covers(settlement: SettlementRow, batch: BatchRow) -> bool:
    """Whether a person's settlement accounts for the batch as it stands now (see the module docstring)."""
    if batch.state is BatchState.SETTLED:
        return settlement.decision is Decision.DELIVERED
    if batch.state is BatchState.POSTED:
        if settlement.decision is Decision.DELIVERED:
            return True
        return batch.attempts == settlement.attempts + 1  # the one re-send the person asked for was answered 2xx
    return False


def standing(settlement: SettlementRow, batch: BatchRow) -> bool:
    """Whether the settlement is still the batch's last word: it covers the batch, or its re-send is still queued."""
    if settlement.decision is Decision.RESEND:
        if batch.state in (BatchState.PENDING, BatchState.WITHHELD):
            return True  # only a re-send decision puts an in-doubt batch back to pending (withheld: still unsent)
        if batch.state is BatchState.SENDING:
            return batch.attempts == settlement.attempts + 1
    return covers(settlement, batch)


def unsettled_resends(journal: Journal, run_id: int) -> list[BatchRow]:
    """Batches posted after doubt that no person has settled: delivered at least once, not provably once."""
    settled = journal.settlements(run_id)
    return [
        batch
        for batch in journal.posted_after_doubt(run_id)
        if batch.id not in settled or not covers(settled[batch.id], batch)
    ]
