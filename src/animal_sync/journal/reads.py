"""The journal's row reads that its writers need too: runs, pages, animals by state, batches, settlements, counters.

Reports ask queries.py instead; these are the reads the pipeline and `settle` make between their writes.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import JournalError
from .rows import BatchRow, Delivery, RunRow, SettlementRow, batch_row, run_row, settlement_row
from .states import AnimalState, BatchState, RunState
from .store import JournalFile, chunks, placeholders, reading

__all__ = ["JournalReads"]


class JournalReads(JournalFile):
    """A journal file's typed reads; `Journal` adds the writes."""

    # -- runs and pages --------------------------------------------------------------------------------------
    @reading
    def run(self, run_id: int | None) -> RunRow:
        row = next(self.db.query("SELECT * FROM runs WHERE id = ?", [run_id]), None)
        if row is None:
            raise JournalError(f"journal {self.path} has no run {run_id}")
        return run_row(row)

    @reading
    def last_run(self) -> RunRow | None:
        row = next(self.db.query("SELECT * FROM runs ORDER BY id DESC LIMIT 1"), None)
        return run_row(row) if row else None

    @reading
    def last_full_sync(self, base_url: str) -> RunRow | None:
        """The latest finished run against this (redacted) API that posted, not a dry run: a full sync done."""
        for row in self.db.query(
            "SELECT * FROM runs WHERE state = ? AND base_url = ? ORDER BY id DESC", [RunState.FINISHED, base_url]
        ):
            run = run_row(row)
            if not run.settings.get("dry_run"):
                return run
        return None

    @reading
    def check_integrity(self) -> None:
        """Refuse a damaged journal (SQLite's quick_check): what it holds cannot be reasoned from."""
        problems = [" ".join(row[0].split()) for row in self.db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise JournalError(
                f"journal {self.path} is damaged ({'; '.join(problems)[:300]}); nothing was done:"
                " restore it from a copy, or start a new journal"
            )

    @reading
    def attempt_url(self, run_id: int) -> str:
        """The API URL the run's latest attempt used (its first URL if no attempt recorded one)."""
        row = self.db.execute("SELECT coalesce(attempt_url, base_url) FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise JournalError(f"journal {self.path} has no run {run_id}")
        return row[0]

    @reading
    def listed_pages(self, run_id: int) -> set[int]:
        return {row[0] for row in self.db.execute("SELECT page FROM pages WHERE run_id = ?", [run_id])}

    @reading
    def first_listed_page(self, run_id: int) -> tuple[int, str | None] | None:
        """The lowest page listed and its digest: what a resume lists again to check the data set is the same."""
        row = self.db.execute(
            "SELECT page, digest FROM pages WHERE run_id = ? ORDER BY page LIMIT 1", [run_id]
        ).fetchone()
        return (row[0], row[1]) if row else None

    @reading
    def page_digest(self, run_id: int, page: int) -> str | None:
        """The digest journaled for a listed page (None: not listed, or listed before digests were kept)."""
        row = self.db.execute("SELECT digest FROM pages WHERE run_id = ? AND page = ?", [run_id, page]).fetchone()
        return row[0] if row else None

    @reading
    def animal_page(self, run_id: int, animal_id: int) -> int | None:
        """The page that listed this animal first."""
        row = self.db.execute("SELECT page FROM animals WHERE run_id = ? AND id = ?", [run_id, animal_id]).fetchone()
        return row[0] if row else None

    @reading
    def bad_listing_items(self, run_id: int) -> list[dict[str, Any]]:
        """Listing items set aside (an id the journal cannot hold), each with its page and reason."""
        rows = self.db.execute(
            "SELECT page, bad_items FROM pages WHERE run_id = ? AND bad_items IS NOT NULL ORDER BY page", [run_id]
        )
        return [{"page": page, **item} for page, items in rows for item in json.loads(items)]

    _EARLIER = "SELECT id FROM runs WHERE id < ? AND state = ? AND base_url = ?"  # an incremental run's baseline

    @reading
    def earlier_finished_runs(self, run: RunRow) -> list[int]:
        """Finished runs before `run` against the same (redacted) API, in order: what an incremental run compares with."""
        return [row[0] for row in self.db.execute(f"{self._EARLIER} ORDER BY id", [run.id, RunState.FINISHED, run.base_url])]

    @reading
    def last_delivery(self, run: RunRow, animal_id: int) -> Delivery | None:
        """The latest record of this id posted (answered 2xx) by an earlier finished run against the same API, or None.

        A batch a person settled as delivered is a judgement, not an answer: it is never the proof an unchanged
        animal rests on (re-sending it is harmless on the upsert endpoints incremental runs are for)."""
        row = self.db.execute(
            f"SELECT run_id, batch_id, transformed FROM animals WHERE id = ? AND run_id IN ({self._EARLIER})"
            " AND state = ? ORDER BY run_id DESC LIMIT 1",
            [animal_id, run.id, RunState.FINISHED, run.base_url, AnimalState.POSTED],
        ).fetchone()
        return Delivery(*row) if row else None

    # -- animals and batches ---------------------------------------------------------------------------------
    @reading
    def animal_ids(self, run_id: int, state: AnimalState) -> list[int]:
        return [
            row[0]
            for row in self.db.execute(
                "SELECT id FROM animals WHERE run_id = ? AND state = ? ORDER BY id", [run_id, state]
            )
        ]

    @reading
    def batch(self, batch_id: int) -> BatchRow:
        row = next(self.db.query("SELECT * FROM batches WHERE id = ?", [batch_id]), None)
        if row is None:
            raise JournalError(f"journal {self.path} has no batch {batch_id}")
        return batch_row(row)

    @reading
    def batches(self, run_id: int, state: BatchState) -> list[BatchRow]:
        return [
            batch_row(row)
            for row in self.db.query(
                "SELECT * FROM batches WHERE run_id = ? AND state = ? ORDER BY id", [run_id, state]
            )
        ]

    @reading
    def batch_records(self, batch: BatchRow) -> list[dict[str, Any]]:
        """The outgoing records of a batch, in the batch's order, from the journal alone."""
        by_id: dict[int, str] = {}
        for chunk in chunks(batch.ids):
            by_id.update(
                self.db.execute(
                    f"SELECT id, transformed FROM animals WHERE run_id = ? AND id IN ({placeholders(chunk)})",
                    [batch.run_id, *chunk],
                ).fetchall()
            )
        return [json.loads(by_id[animal_id]) for animal_id in batch.ids]

    @reading
    def settlements(self, run_id: int) -> dict[int, SettlementRow]:
        """Each settled batch of the run and its latest settlement (a batch re-sent, then in doubt again, may have two)."""
        rows = self.db.query("SELECT * FROM settlements WHERE run_id = ? ORDER BY id", [run_id])
        return {row["batch_id"]: settlement_row(row) for row in rows}

    @reading
    def posted_after_doubt(self, run_id: int) -> list[BatchRow]:
        """Batches answered 2xx after having been in doubt: delivered at least once, perhaps twice."""
        return [
            batch_row(row)
            for row in self.db.query(
                "SELECT * FROM batches WHERE run_id = ? AND state = ? AND in_doubt_at IS NOT NULL ORDER BY id",
                [run_id, BatchState.POSTED],
            )
        ]

    @reading
    def assumed_deliveries(self, run_id: int) -> list[BatchRow]:
        """Posted batches whose exactly-once rests on an assumption, not a proof: one re-sent within its own POST
        after an unproven 5xx (its own `assumption`), or one carrying ids of a batch that failed on such a 5xx
        (that batch's `assumption`, given to the row returned)."""
        own = [
            batch_row(row)
            for row in self.db.query(
                "SELECT * FROM batches WHERE run_id = ? AND state = ? AND assumption IS NOT NULL ORDER BY id",
                [run_id, BatchState.POSTED],
            )
        ]
        seen = {batch.id for batch in own}
        inherited = []
        rows = self.db.query(
            "SELECT DISTINCT p.*, f.assumption AS failed_assumption FROM batches f, json_each(f.ids) j"
            " JOIN animals a ON a.run_id = f.run_id AND a.id = j.value"
            " JOIN batches p ON p.id = a.batch_id AND p.state = ?"
            " WHERE f.run_id = ? AND f.state = ? AND f.assumption IS NOT NULL ORDER BY p.id",
            [BatchState.POSTED, run_id, BatchState.FAILED],
        )
        for row in rows:
            if row["id"] not in seen:
                seen.add(row["id"])
                inherited.append(batch_row({**row, "assumption": row["failed_assumption"]}))
        return sorted(own + inherited, key=lambda batch: batch.id)

    @reading
    def counters(self, run_id: int) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, value FROM counters WHERE run_id = ? ORDER BY name", [run_id]))

    @reading
    def count_animals(self, run_id: int) -> dict[str, int]:
        return dict(
            self.db.execute("SELECT state, count(*) FROM animals WHERE run_id = ? GROUP BY state", [run_id])
        )

    @reading
    def count_batches(self, run_id: int) -> dict[str, int]:
        return dict(
            self.db.execute("SELECT state, count(*) FROM batches WHERE run_id = ? GROUP BY state", [run_id])
        )
