"""The settlements that still stand: what a person decided about in-doubt batches, as the reports show it."""

from __future__ import annotations

from dataclasses import dataclass

from ..journal import BatchState, Decision, Journal, standing

__all__ = ["SettledBatch", "settled"]


@dataclass(frozen=True)
class SettledBatch:
    """A batch a person settled whose settlement still stands: who, when, why, how many animals, and where it is now."""

    batch_id: int
    decision: Decision
    reason: str
    user: str
    settled_at: str
    animals: int
    batch_state: BatchState


def settled(journal: Journal, run_id: int) -> tuple[SettledBatch, ...]:
    """The batches a person has settled whose settlement still stands."""
    found = []
    for batch_id, settlement in journal.settlements(run_id).items():
        batch = journal.batch(batch_id)
        if standing(settlement, batch):
            found.append(SettledBatch(
                batch_id, settlement.decision, settlement.reason, settlement.user, settlement.settled_at,
                len(batch.ids), batch.state,
            ))
    return tuple(found)
