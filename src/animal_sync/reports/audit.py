"""`audit`: prove from the journal alone that every discovered id went out in exactly one batch answered 2xx,
or, in an incremental run, is unchanged since a named delivery of an earlier run (incremental.py judges that).

The audit trusts nothing the pipeline kept in memory: it re-derives every claim from the journal's rows,
and recomputes every posted record from its raw payload with today's transform (examine.py). The result is a frozen
value; `render` words it, `to_json()` serialises it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..examine import examine
from ..journal import (
    AnimalState,
    BatchState,
    Journal,
    RunState,
    delivered_records,
    duplicate_deliverable_ids,
    orphans,
    select_run,
    undelivered_animals,
    UnchangedClaim,
    unchanged_claims,
    unsettled_resends,
)
from ..shards import WHOLE, journaled_shard
from .plain import plain
from .settled import SettledBatch, settled
from .writer import WriterProcess, writer_process

__all__ = ["EXAMPLES", "AssumedBatch", "Audit", "Exceptions", "audit"]

EXAMPLES = 1000  # exceptions listed per kind in the data; the counts are always complete


@dataclass(frozen=True)
class AssumedBatch:
    """A posted batch whose exactly-once rests on an assumption the journal cannot prove, and that assumption."""

    batch_id: int
    animals: int
    assumption: str


@dataclass(frozen=True)
class Audit:
    """The audit's verdict, its figures, and each exception kind's count with up to EXAMPLES examples."""

    run_id: int
    run_state: RunState
    dry_run: bool
    limit: int | None  # test mode: the run was limited to its first animals listed
    ok: bool
    discovered: int
    posted: int
    settled_animals: int
    unchanged: int  # --incremental: not sent, each proven delivered with the same record by an earlier run
    records_rechecked: int
    batches_posted: int
    resent_after_doubt: tuple[int, ...]
    settled: tuple[SettledBatch, ...]
    # Counted apart, never called proven: each rests on a 5xx to a body sent without 100 Continue having come
    # before the handler read it (over HTTPS, or from a server never heard to send 100 Continue).
    assumed: tuple[AssumedBatch, ...]
    exception_counts: Mapping[str, int]
    exceptions: Mapping[str, tuple[Mapping[str, Any], ...]]  # kind -> examples, each its details by name
    process: WriterProcess | None  # only while the journal says the run is running

    @property
    def proven(self) -> bool:
        """OK, and every delivery proven by the journal alone, with no batch resting on an assumption."""
        return self.ok and not self.assumed

    def to_json(self) -> dict[str, Any]:
        return {**plain(self), "proven": self.proven}


class Exceptions:
    """Counts every exception of each kind, and keeps the first EXAMPLES of each with their details."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.found: dict[str, list[Mapping[str, Any]]] = {}

    def add(self, kind: str, **detail: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.counts[kind] <= EXAMPLES:
            self.found.setdefault(kind, []).append(detail)


def audit(journal: Journal, run_id: int | None = None) -> Audit:
    """Prove from the journal alone that every discovered id went out in exactly one batch answered 2xx.

    Exception kinds: upstream_changed, unlisted_page, bad_listing_item, missing, failed, quarantined, in_doubt,
    at_least_once, duplicate, orphan, mismatch, unchanged_unproven. A batch a person settled (`settle`) is listed
    apart, under "settled", and is not an exception.
    """
    run = select_run(journal, run_id)
    dry_run = bool(run.settings.get("dry_run"))
    found = Exceptions()
    exception = found.add

    changed = (run.outcome or {}).get("upstream_changed")
    if changed:  # the last attempt saw the upstream serve another data set under the journaled ids
        exception("upstream_changed", reason=changed)
    limit = run.settings.get("limit")
    listed = journal.listed_pages(run.id)
    shard = journaled_shard(run.settings) or WHOLE  # a shard's run lists its own pages only
    if limit is None:  # a --limit run stops listing on purpose once it has its animals
        for page in shard.pages(run.total_pages or 0):
            if page not in listed:
                exception("unlisted_page", page=page)
    if run.total_pages is None:
        exception("unlisted_page", page=shard.first_page, reason="the listing never started")

    for item in journal.bad_listing_items(run.id):
        exception("bad_listing_item", **item)

    in_doubt = journal.batches(run.id, BatchState.IN_DOUBT)
    held = {animal_id for batch in in_doubt for animal_id in batch.ids}
    for batch in in_doubt:
        exception(
            "in_doubt", batch_id=batch.id, ids=batch.ids, reason=batch.last_error,
            response_status=batch.response_status,
        )
    # Answered 2xx, but only after a send whose outcome was lost: delivered at least once, perhaps twice.
    for batch in unsettled_resends(journal, run.id):
        exception(
            "at_least_once", batch_id=batch.id, animals=len(batch.ids), attempts=batch.attempts,
            in_doubt_at=batch.in_doubt_at, reason="re-sent after its outcome was unknown, then answered 2xx",
        )

    for animal in undelivered_animals(journal, run.id):
        if animal.id in held:
            continue  # named once, with its batch
        if animal.state in (AnimalState.FAILED, AnimalState.QUARANTINED):
            exception(animal.state.value, id=animal.id, reason=animal.last_error)
        elif not (dry_run and animal.state == AnimalState.FETCHED):
            exception("missing", id=animal.id, state=animal.state, batch_id=animal.batch_id)

    # An id carried by two batches that may have been delivered: the journal itself would allow a double delivery.
    for animal_id, batches in duplicate_deliverable_ids(journal, run.id):
        exception("duplicate", id=animal_id, batches=batches)

    for orphan in orphans(journal, run.id):
        exception("orphan", id=orphan.id, batch_id=orphan.batch_id, batch_state=orphan.batch_state)

    checked = 0
    for record in delivered_records(journal, run.id):
        checked += 1
        # The same path a worker took when it fetched the record: decode, check the id, transform.
        expected = examine(record.raw or b"", record.id)
        if expected.transformed is None:
            exception("mismatch", id=record.id, reason=f"raw payload no longer transforms: {expected.reason}")
        elif expected.transformed != record.transformed:
            exception("mismatch", id=record.id, posted=record.transformed, expected=expected.transformed)

    for claim in unchanged_claims(journal, run.id):  # each pointer checked against the journal, not taken on trust
        reason = unproven(claim)
        if reason is not None:
            exception("unchanged_unproven", id=claim.id, run_id=claim.run_id, batch_id=claim.batch_id, reason=reason)

    animals = journal.count_animals(run.id)
    return Audit(
        run_id=run.id,
        run_state=run.state,
        dry_run=dry_run,
        limit=limit,
        ok=not found.counts and run.state == RunState.FINISHED,
        discovered=sum(animals.values()),
        posted=animals.get(AnimalState.POSTED, 0),
        settled_animals=animals.get(AnimalState.SETTLED, 0),
        unchanged=animals.get(AnimalState.UNCHANGED, 0),
        records_rechecked=checked,
        batches_posted=journal.count_batches(run.id).get(BatchState.POSTED, 0),
        resent_after_doubt=tuple(batch.id for batch in journal.posted_after_doubt(run.id)),
        settled=settled(journal, run.id),
        assumed=tuple(
            AssumedBatch(batch.id, len(batch.ids), batch.assumption or "")
            for batch in journal.assumed_deliveries(run.id)
        ),
        exception_counts=found.counts,
        exceptions={kind: tuple(items) for kind, items in found.found.items()},
        process=writer_process(journal) if run.state == RunState.RUNNING else None,
    )


# Only a delivery the API answered 2xx proves an unchanged animal; a person's settlement is a judgement, not proof.
_DELIVERED_BATCH = (BatchState.POSTED,)
_DELIVERED_ANIMAL = (AnimalState.POSTED,)


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
