"""The journal's reads for reports: status, audit, export, the HTML report, watch and bench ask here, in types.

No SQL is written outside the journal's modules: a report asks a question by name and gets small frozen rows
back, so the schema can change in one place. These are functions taking an open `Journal`, not methods on it,
so the journal's writes (journal.py) and these reports' questions can change apart. Animals are streamed in
slices, so a report stays flat in memory at any scale.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ..errors import JournalError
from .journal import Journal
from .rows import RunRow
from .states import AnimalState, BatchState
from .store import reading

__all__ = [
    "AnimalRecord",
    "ListedAnimal",
    "Orphan",
    "UnchangedClaim",
    "delivered_records",
    "duplicate_deliverable_ids",
    "iter_animals",
    "last_batch_built_at",
    "last_posted_at",
    "listed_animals",
    "orphans",
    "posted_batch_sizes",
    "select_run",
    "undelivered_animals",
    "unchanged_claims",
]

SLICE = 1000  # animal rows read per query while streaming
DELIVERED = (AnimalState.POSTED, AnimalState.SETTLED)  # settled: judged delivered by a person
ACCOUNTED = (*DELIVERED, AnimalState.UNCHANGED)  # unchanged: delivered by an earlier run (its own proof, below)
# A batch in one of these states may have been delivered (as may any batch once in doubt, whatever its state now).
DELIVERABLE = (BatchState.POSTED, BatchState.IN_DOUBT, BatchState.SENDING, BatchState.SETTLED)


@dataclass(frozen=True)
class AnimalRecord:
    """One animal's row: its state, its batch, why it last failed, and its payload as fetched and as posted."""

    id: int
    state: AnimalState
    batch_id: int | None
    last_error: str | None
    raw: str | bytes | None
    transformed: str | None


@dataclass(frozen=True)
class UnchangedClaim:
    """An animal an incremental run did not send, with what its pointer names: the audit judges the claim."""

    id: int
    raw: str | bytes | None
    transformed: str | None
    run_id: int | None  # the earlier run the pointer names
    batch_id: int | None  # ... and its batch
    run_state: str | None  # that run as the journal holds it (None: no such run)
    same_api: bool  # that run was against the same (redacted) base URL as this one
    batch_run_id: int | None  # the run the named batch belongs to (None: no such batch)
    batch_state: BatchState | None
    batch_holds_id: bool  # the named batch's ids include this id
    prior_state: AnimalState | None  # the id's row in the named run (None: no such row)
    prior_batch_id: int | None  # ... the batch that row is bound to
    prior_transformed: str | None  # ... and the record it holds


@dataclass(frozen=True)
class Orphan:
    """An animal and a batch that disagree: posted (or settled) on one side, not on the other."""

    id: int
    batch_id: int | None
    batch_state: BatchState | None


def select_run(journal: Journal, run_id: int | None) -> RunRow:
    """The run asked for, or the journal's last one; a one-line JournalError when there is none."""
    if run_id is not None:
        return journal.run(run_id)
    run = journal.last_run()
    if run is None:
        raise JournalError(f"journal {journal.path} holds no run yet")
    return run


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


@reading
def _stream(journal: Journal, run_id: int, states: Sequence[AnimalState], *, exclude: bool = False) -> Iterator[AnimalRecord]:
    """Animals of the run in id order, a slice at a time; only those in `states` (or not in them), or all."""
    test = f" AND state {'NOT IN' if exclude else 'IN'} ({_marks(states)})" if states else ""
    last = -1
    while True:
        rows = list(
            journal.db.query(
                "SELECT id, state, batch_id, last_error, raw, transformed FROM animals"
                f" WHERE run_id = ? AND id > ?{test} ORDER BY id LIMIT {SLICE}",
                [run_id, last, *states],
            )
        )
        if not rows:
            return
        for row in rows:
            yield AnimalRecord(
                row["id"], AnimalState(row["state"]), row["batch_id"], row["last_error"], row["raw"], row["transformed"]
            )
        last = rows[-1]["id"]


def iter_animals(journal: Journal, run_id: int, states: Iterable[AnimalState] = ()) -> Iterator[AnimalRecord]:
    """The run's animals in id order, those in `states` only when any are given (export)."""
    return _stream(journal, run_id, [AnimalState(state) for state in states])


def undelivered_animals(journal: Journal, run_id: int) -> Iterator[AnimalRecord]:
    """Animals neither posted, settled as delivered nor unchanged: each is an exception unless its batch is named."""
    return _stream(journal, run_id, ACCOUNTED, exclude=True)


def delivered_records(journal: Journal, run_id: int) -> Iterator[AnimalRecord]:
    """Animals posted or settled as delivered, with the raw payload the audit re-transforms."""
    return _stream(journal, run_id, DELIVERED)


@reading
def duplicate_deliverable_ids(journal: Journal, run_id: int) -> list[tuple[int, tuple[int, ...]]]:
    """Ids carried by two or more batches that may have been delivered, each with those batches.

    The journal itself would then allow a double delivery. A batch once in doubt counts whatever its state now
    (e.g. pending again for a re-send a person asked for).
    """
    rows = journal.db.query(
        "SELECT j.value AS id, group_concat(b.id) AS batches FROM batches b, json_each(b.ids) j"
        f" WHERE b.run_id = ? AND (b.state IN ({_marks(DELIVERABLE)}) OR b.in_doubt_at IS NOT NULL)"
        " GROUP BY j.value HAVING count(*) > 1",
        [run_id, *DELIVERABLE],
    )
    return [(row["id"], tuple(int(batch) for batch in row["batches"].split(","))) for row in rows]


@reading
def orphans(journal: Journal, run_id: int) -> list[Orphan]:
    """A posted animal whose batch was not answered 2xx, or a posted batch whose ids are not all posted by it;
    likewise for a batch settled as delivered and its animals."""
    found = []
    for animal_state, batch_state in ((AnimalState.POSTED, BatchState.POSTED), (AnimalState.SETTLED, BatchState.SETTLED)):
        rows = journal.db.query(
            "SELECT a.id, a.batch_id, b.state AS batch_state FROM animals a LEFT JOIN batches b ON b.id = a.batch_id"
            " WHERE a.run_id = ? AND a.state = ? AND (b.state IS NULL OR b.state != ?)"
            " UNION ALL "
            "SELECT j.value, b.id, b.state FROM batches b, json_each(b.ids) j"
            " LEFT JOIN animals a ON a.run_id = b.run_id AND a.id = j.value"
            " WHERE b.run_id = ? AND b.state = ? AND (a.batch_id IS NOT b.id OR a.state IS NOT ?)",
            [run_id, animal_state, batch_state, run_id, batch_state, animal_state],
        )
        found.extend(
            Orphan(row["id"], row["batch_id"], None if row["batch_state"] is None else BatchState(row["batch_state"]))
            for row in rows
        )
    return found


@reading
def posted_batch_sizes(journal: Journal, run_id: int) -> Iterator[tuple[str, int]]:
    """(answered at, animals) for each batch answered 2xx, streamed: the throughput chart's series."""
    for row in journal.db.execute(
        "SELECT finished_at, size FROM batches WHERE run_id = ? AND state = ?", [run_id, BatchState.POSTED]
    ):
        yield row[0], row[1]


@reading
def last_posted_at(journal: Journal, run_id: int) -> str | None:
    """When the run's last batch answered 2xx was answered, or None before the first."""
    return journal.db.execute(
        "SELECT max(finished_at) FROM batches WHERE run_id = ? AND state = ?", [run_id, BatchState.POSTED]
    ).fetchone()[0]


@reading
def last_batch_built_at(journal: Journal, run_id: int) -> str | None:
    """When the run's last batch was built: fetching was done by then (bench measures the tail after it)."""
    return journal.db.execute("SELECT max(created_at) FROM batches WHERE run_id = ?", [run_id]).fetchone()[0]


@reading
def unchanged_claims(journal: Journal, run_id: int) -> Iterator[UnchangedClaim]:
    """Each unchanged animal of the run with the run, batch and record its pointer names, streamed in id order."""
    for row in journal.db.query(
        "SELECT a.id, a.raw, a.transformed, a.delivered_run_id, a.delivered_batch_id, r.state AS run_state,"
        " r.base_url = me.base_url AS same_api, b.run_id AS batch_run_id, b.state AS batch_state,"
        " EXISTS (SELECT 1 FROM json_each(b.ids) j WHERE j.value = a.id) AS batch_holds_id,"
        " p.state AS prior_state, p.batch_id AS prior_batch_id, p.transformed AS prior_transformed"
        " FROM animals a JOIN runs me ON me.id = a.run_id"
        " LEFT JOIN runs r ON r.id = a.delivered_run_id AND r.id < a.run_id"
        " LEFT JOIN batches b ON b.id = a.delivered_batch_id"
        " LEFT JOIN animals p ON p.run_id = a.delivered_run_id AND p.id = a.id AND a.delivered_run_id < a.run_id"
        " WHERE a.run_id = ? AND a.state = ? ORDER BY a.id",
        [run_id, AnimalState.UNCHANGED],
    ):
        yield UnchangedClaim(
            id=row["id"], raw=row["raw"], transformed=row["transformed"],
            run_id=row["delivered_run_id"], batch_id=row["delivered_batch_id"], run_state=row["run_state"],
            same_api=bool(row["same_api"]), batch_run_id=row["batch_run_id"],
            batch_state=None if row["batch_state"] is None else BatchState(row["batch_state"]),
            batch_holds_id=bool(row["batch_holds_id"]),
            prior_state=None if row["prior_state"] is None else AnimalState(row["prior_state"]),
            prior_batch_id=row["prior_batch_id"], prior_transformed=row["prior_transformed"],
        )


@dataclass(frozen=True)
class ListedAnimal:
    """An animal as the union of shard journals sees it: its id, the page it was listed on, its state."""

    id: int
    page: int
    state: AnimalState


@reading
def listed_animals(journal: Journal, run_id: int) -> Iterator[ListedAnimal]:
    """Every animal the run listed, with its page and state, in id order, streamed (the shards' union audit)."""
    for animal_id, page, state in journal.db.execute(
        "SELECT id, page, state FROM animals WHERE run_id = ? ORDER BY id", [run_id]
    ):
        yield ListedAnimal(animal_id, page, AnimalState(state))
