"""Incremental runs (`run --incremental`): what an animal is compared with, and how the audit proves one not sent.

A run that is incremental posts only animals that are new, or whose transformed record differs from the record last
delivered for that id by an earlier finished run of the same journal against the same API; the others are journaled
`unchanged` with a pointer to that delivery. The audit (`audit.unproven`) then checks each pointer against the
journal, never the pipeline's word: the named batch is a delivered batch of an earlier run, carries the id, and
delivered this very record, which the raw payload still transforms to.
"""

from __future__ import annotations

from ..journal import Delivery, Journal, RunRow

__all__ = ["Baseline"]

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
