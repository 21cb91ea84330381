"""The journal's reads for browsing a run live (`serve`): animals found by id or name a page at a time, the batch
that carried one, and the recent transitions, as small frozen rows.

Functions taking an open `Journal`, like queries.py; each is one short read, so a page that polls them every second
never holds a transaction the writer would wait on (in WAL it never waits anyway; the WAL just cannot be reset
under a long read).
"""

from __future__ import annotations

from dataclasses import dataclass

from .journal import Journal
from .queries import AnimalRecord
from .rows import RunRow, run_row
from .states import AnimalState, BatchState
from .store import reading

__all__ = ["BatchSummary", "Event", "count_matching_animals", "find_animals", "find_batches", "recent_events", "runs"]

# An animal's name: from its outgoing record, else (a quarantined animal) from the body as received, when JSON.
_NAME = (
    "coalesce(json_extract(CASE WHEN json_valid(transformed) THEN transformed END, '$.name'),"
    " json_extract(CASE WHEN json_valid(CAST(raw AS TEXT)) THEN CAST(raw AS TEXT) END, '$.name'))"
)


def _match(text: str) -> tuple[str, list[object]]:
    """The WHERE clause for a search: an exact id when `text` is a number, else a name containing it (any case)."""
    text = text.strip()
    if not text:
        return "", []
    if text.isascii() and text.isdigit() and len(text) < 19:
        return " AND id = ?", [int(text)]
    like = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f" AND {_NAME} LIKE ? ESCAPE '\\'", [f"%{like}%"]


@reading
def find_animals(journal: Journal, run_id: int, text: str = "", *, offset: int = 0, limit: int = 20) -> list[AnimalRecord]:
    """The run's animals whose id is `text` (a number) or whose name contains it, in id order, one page of them."""
    where, params = _match(text)
    rows = journal.db.query(
        "SELECT id, state, batch_id, last_error, raw, transformed FROM animals"
        f" WHERE run_id = ?{where} ORDER BY id LIMIT ? OFFSET ?",
        [run_id, *params, limit, offset],
    )
    return [
        AnimalRecord(row["id"], AnimalState(row["state"]), row["batch_id"], row["last_error"], row["raw"], row["transformed"])
        for row in rows
    ]


@reading
def count_matching_animals(journal: Journal, run_id: int, text: str = "") -> int:
    """How many animals `find_animals` would page through."""
    where, params = _match(text)
    return journal.db.execute(f"SELECT count(*) FROM animals WHERE run_id = ?{where}", [run_id, *params]).fetchone()[0]


@dataclass(frozen=True)
class BatchSummary:
    """A batch as a person browsing animals sees it: its state, size, tries and the API's last answer."""

    id: int
    state: BatchState
    size: int
    attempts: int
    response_status: int | None
    finished_at: str | None


@reading
def find_batches(journal: Journal, batch_ids: list[int]) -> dict[int, BatchSummary]:
    """The named batches, by id (the batches that carried one page of animals)."""
    if not batch_ids:
        return {}
    marks = ",".join("?" * len(batch_ids))
    rows = journal.db.query(
        f"SELECT id, state, size, attempts, response_status, finished_at FROM batches WHERE id IN ({marks})", batch_ids
    )
    return {
        row["id"]: BatchSummary(
            row["id"], BatchState(row["state"]), row["size"], row["attempts"], row["response_status"], row["finished_at"]
        )
        for row in rows
    }


@dataclass(frozen=True)
class Event:
    """One transition the journal holds a time for: a run started, resumed or ended, a page listed, a batch built,
    sent or answered, an animal quarantined or failed, a batch settled by a person."""

    at: str
    kind: str  # run | page | batch | animal | settlement
    subject: int  # the run, page, batch or animal id
    state: str
    detail: str | None


@reading
def recent_events(journal: Journal, run_id: int, limit: int = 50) -> list[Event]:
    """The run's latest transitions, newest first. Animals fetched or posted are counted, not listed (thousands a
    second); only an animal that went wrong is an event of its own."""
    rows = journal.db.execute(
        "SELECT * FROM ("
        " SELECT started_at AS at, 'run' AS kind, id AS subject, 'started' AS state, base_url AS detail FROM runs WHERE id = ?1"
        " UNION ALL SELECT resumed_at, 'run', id, 'resumed', NULL FROM runs WHERE id = ?1 AND resumed_at IS NOT NULL"
        " UNION ALL SELECT finished_at, 'run', id, state, json_extract(outcome, '$.message') FROM runs"
        "  WHERE id = ?1 AND finished_at IS NOT NULL"
        " UNION ALL SELECT listed_at, 'page', page, 'listed', items || ' animals' FROM pages WHERE run_id = ?1"
        " UNION ALL SELECT coalesce(finished_at, sent_at, created_at), 'batch', id, state,"
        "  coalesce(last_error, CASE WHEN response_status IS NOT NULL THEN 'HTTP ' || response_status END,"
        "  size || ' animals') FROM batches WHERE run_id = ?1"
        " UNION ALL SELECT updated_at, 'animal', id, state, last_error FROM animals"
        "  WHERE run_id = ?1 AND state IN (?2, ?3)"
        " UNION ALL SELECT settled_at, 'settlement', batch_id, decision, user || ': ' || reason FROM settlements"
        "  WHERE run_id = ?1"
        ") WHERE at IS NOT NULL ORDER BY at DESC LIMIT ?4",
        [run_id, AnimalState.QUARANTINED, AnimalState.FAILED, limit],
    ).fetchall()
    return [Event(*row) for row in rows]


@reading
def runs(journal: Journal) -> list[RunRow]:
    """Every run of the journal, newest first (metrics look for the last clean finish)."""
    return [run_row(row) for row in journal.db.query("SELECT * FROM runs ORDER BY id DESC")]
