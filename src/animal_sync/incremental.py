"""Incremental runs (`run --incremental`): what an animal is compared with, and how the audit proves one not sent.

A run that is incremental posts only animals that are new, or whose transformed record differs from the record last
delivered for that id by an earlier finished run of the same journal against the same API; the others are journaled
`unchanged` with a pointer to that delivery. The audit then checks each pointer against the journal, never the
pipeline's word: the named batch is a delivered batch of an earlier run, carries the id, and delivered this very
record, which the raw payload still transforms to.
"""

from __future__ import annotations

from .examine import examine
from .journal import AnimalState, BatchState, Delivery, Journal, RunRow, UnchangedClaim

__all__ = ["Baseline", "unproven"]

# Only a delivery the API answered 2xx proves an unchanged animal; a person's settlement is a judgement, not proof.
_DELIVERED_BATCH = (BatchState.POSTED,)
_DELIVERED_ANIMAL = (AnimalState.POSTED,)


class Baseline:
    """The earlier deliveries an incremental run compares with: every finished run before it against its API."""

    def __init__(self, journal: Journal, run: RunRow) -> None:
        self.journal = journal
        self.run = run
        self.runs = journal.earlier_finished_runs(run)

    def unchanged_since(self, animal_id: int, transformed: str) -> Delivery | None:
        """The delivery this record repeats exactly (then it is not sent), or None: new, or changed since."""
        if not self.runs:
            return None  # a full sync: nothing to ask the journal
        delivered = self.journal.last_delivery(self.run, animal_id)
        return delivered if delivered is not None and delivered.transformed == transformed else None

    def describe(self) -> str:
        """One line for the run's log and outcome: what the run compared with, or that it is a full sync."""
        if not self.runs:
            return "full sync: the journal holds no earlier finished run against this API"
        named = ", ".join(map(str, self.runs)) if len(self.runs) <= 10 else f"{self.runs[0]} to {self.runs[-1]} ({len(self.runs)})"
        return f"incremental: compared with the deliveries of run{'s' if len(self.runs) > 1 else ''} {named}"


def unproven(claim: UnchangedClaim) -> str | None:
    """Why an unchanged animal's pointer does not prove it was delivered with this record, or None when it does."""
    run, batch = claim.run_id, claim.batch_id
    if run is None or batch is None:
        return "no pointer to the delivery it repeats"
    if claim.run_state is None:
        return f"run {run} is not an earlier run of this journal"
    if not claim.same_api:
        return f"run {run} was against another API"
    if claim.batch_run_id != run:
        return f"batch {batch} is not a batch of run {run}"
    if claim.batch_state not in _DELIVERED_BATCH:
        return f"batch {batch} was not delivered (it is {claim.batch_state})"
    if not claim.batch_holds_id or claim.prior_state not in _DELIVERED_ANIMAL or claim.prior_batch_id != batch:
        return f"batch {batch} did not deliver id {claim.id}"
    if claim.prior_transformed != claim.transformed:
        return f"batch {batch} delivered another record of id {claim.id}"
    if examine(claim.raw or b"", claim.id).transformed != claim.transformed:
        return "its raw payload does not transform to the record it claims unchanged"
    return None
