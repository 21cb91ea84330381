"""`status`: what the journal says a run is doing, as a frozen value; `render` words it, `to_json()` serialises it.

Every figure comes from the journal alone, so `status` reads the same from another terminal as from the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..journal import AnimalState, BatchState, Journal, RunState, select_run
from .plain import plain
from .settled import SettledBatch, settled
from ..shards import WHOLE, journaled_shard
from .writer import WriterProcess, writer_process

# SettledBatch, WriterProcess, plain, settled and writer_process live in their own modules (settled, writer,
# plain); they are named here too for the callers that imported them from status.
__all__ = ["Left", "Pages", "SettledBatch", "Status", "WriterProcess", "plain", "settled", "status", "writer_process"]


@dataclass(frozen=True)
class Pages:
    listed: int
    total: int | None  # None until the first page is listed
    owned: int | None = None  # of the total, those the run lists: a shard's share (all without --shard)


@dataclass(frozen=True)
class Left:
    pages: int | None
    animals: int


@dataclass(frozen=True)
class Status:
    """The report of a run: progress, states, retries and errors, throughput, what is left."""

    run_id: int
    state: RunState
    base_url: str  # the API in use: a resume may have moved the run to a new one
    first_base_url: str
    dry_run: bool
    started_at: str
    resumed_at: str | None
    finished_at: str | None
    attempts: int
    elapsed_seconds: float
    pages: Pages
    animals: Mapping[str, int]  # by state, every state present
    batches: Mapping[str, int]  # by state, every state present
    retries: Mapping[str, int]
    posts: Mapping[str, int]  # POST outcomes (delivered, never_received, ...) and what became of the bodies
    errors: Mapping[str, int]
    throughput_per_second: float | None
    left: Left
    settled: tuple[SettledBatch, ...]
    message: str | None
    process: WriterProcess | None  # only while the journal says the run is running
    shard: str | None = None  # `run --shard I/N`: the run lists, fetches and posts this shard's pages only

    @property
    def animals_total(self) -> int:
        return sum(self.animals.values())

    def to_json(self) -> dict[str, Any]:
        data = plain(self)
        data["animals"] = {"total": self.animals_total, **data["animals"]}
        return data


def _seconds_between(start: str, end: str | None) -> float:
    finish = datetime.fromisoformat(end) if end else datetime.now(datetime.fromisoformat(start).tzinfo)
    return max(0.0, (finish - datetime.fromisoformat(start)).total_seconds())


def _named(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {name.removeprefix(prefix): n for name, n in counters.items() if name.startswith(prefix)}


def status(journal: Journal, run_id: int | None = None) -> Status:
    """The report of the current or last run: progress, states, retries and errors, throughput, what is left."""
    run = select_run(journal, run_id)
    animals = {state.value: 0 for state in AnimalState} | journal.count_animals(run.id)
    batches = {state.value: 0 for state in BatchState} | journal.count_batches(run.id)
    counters = journal.counters(run.id)
    listed = len(journal.listed_pages(run.id))
    elapsed = _seconds_between(run.started_at, run.finished_at if run.state != RunState.RUNNING else None)
    discovered = sum(animals.values())
    shard = journaled_shard(run.settings)
    owned = None if run.total_pages is None else len((shard or WHOLE).pages(run.total_pages))
    return Status(
        run_id=run.id,
        state=run.state,
        base_url=journal.attempt_url(run.id),
        first_base_url=run.base_url,
        dry_run=bool(run.settings.get("dry_run")),
        started_at=run.started_at,
        resumed_at=run.resumed_at,
        finished_at=run.finished_at,
        attempts=run.attempts,
        elapsed_seconds=round(elapsed, 3),
        pages=Pages(listed, run.total_pages, owned),
        animals=animals,
        batches=batches,
        retries=_named(counters, "retry_"),
        posts=_named(counters, "post_"),
        errors={name: n for name, n in counters.items() if not name.startswith(("retry_", "post_"))},
        throughput_per_second=round(animals[AnimalState.POSTED] / elapsed, 1) if elapsed else None,
        left=Left(
            pages=None if owned is None else max(0, owned - listed),
            animals=discovered - animals[AnimalState.POSTED] - animals[AnimalState.SETTLED] - animals[AnimalState.UNCHANGED],
        ),
        settled=settled(journal, run.id),
        message=(run.outcome or {}).get("message"),
        process=writer_process(journal) if run.state == RunState.RUNNING else None,
        shard=None if shard is None else str(shard),
    )
