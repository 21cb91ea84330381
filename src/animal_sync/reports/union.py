"""`audit` and `status` over several shard journals (`run --shard I/N`): the union, proved from the journals alone.

Each journal proves its own shard (audit.py); only the union can prove the shards fit together: all N present
exactly once with one N and one total_pages, every listed id in the journal of the shard that owns its page,
every id 0 .. 10*T-1 listed, and each posted exactly once across all of them. Frozen values; `render` words them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .audit import AssumedBatch, Audit, Exceptions, audit
from ..journal import AnimalState, Journal, listed_animals, select_run
from ..shards import PAGE_SIZE, WHOLE, Shard, journaled_shard, page_of
from .status import Status, plain, status

__all__ = ["ShardAudit", "ShardStatus", "UnionAudit", "UnionStatus", "partial_run", "union_audit", "union_status"]

DELIVERED = (AnimalState.POSTED, AnimalState.SETTLED)  # settled: a person judged it delivered


@dataclass(frozen=True)
class ShardAudit:
    """One journal's own audit, named by its path and shard."""

    journal: str
    shard: str  # 0/1: the journal's run was not sharded
    total_pages: int | None
    audit: Audit


@dataclass(frozen=True)
class UnionAudit:
    """The union's verdict: OK only when every journal's own audit is OK and the shards fit together."""

    ok: bool
    shard_count: int | None  # None when the journals disagree (or none is sharded)
    total_pages: int | None  # None when the journals disagree (or nothing was listed)
    listed: int  # distinct ids listed across the journals
    delivered: int  # distinct ids posted (or settled as delivered) across the journals
    settled: int  # of those, ids a person settled as delivered: a judgement, not an answer
    unchanged: int  # ids not sent again: unchanged since a delivery each journal's own audit names
    journals: tuple[ShardAudit, ...]
    exception_counts: Mapping[str, int]
    exceptions: Mapping[str, tuple[Mapping[str, Any], ...]]

    @property
    def assumed(self) -> tuple[AssumedBatch, ...]:
        """The journals' batches whose exactly-once rests on an assumption (each named in its own audit)."""
        return tuple(batch for item in self.journals for batch in item.audit.assumed)

    @property
    def proven(self) -> bool:
        """OK, and no delivery in any journal resting on an assumption: as a single journal's audit says it."""
        return self.ok and not self.assumed

    def to_json(self) -> dict[str, Any]:
        return {**plain(self), "proven": self.proven}


def partial_run(own: Audit) -> str | None:
    """Why a journal's run cannot prove its shard delivered whatever its own audit says, or None when it can."""
    if own.dry_run:
        return "a dry run posts nothing: it proves no delivery"
    if own.limit is not None:
        return f"a run limited to its first {own.limit} animals listed proves no full delivery"
    return None


def _one(values: set[int | None]) -> int | None:
    return next(iter(values)) if len(values) == 1 else None


def _shards_fit(
    named: Sequence[tuple[str, Shard, int | None]], exception: Callable[..., None]
) -> tuple[int | None, int | None]:
    """Check the shards themselves: one N, each index once, one total; return that N and that total."""
    counts = {shard.count for _, shard, _ in named}
    if len(counts) > 1:  # an unsharded journal counts as 0/1
        exception("shard_count_differs", counts={path: shard.count for path, shard, _ in named})
    count = _one(counts)
    if count is not None:
        holders: dict[int, list[str]] = {}
        for path, shard, _ in named:
            holders.setdefault(shard.index, []).append(path)
        for index in range(count):
            if index not in holders:
                exception("missing_shard", shard=f"{index}/{count}", reason="no journal of this shard was given")
            elif len(holders[index]) > 1:
                exception("duplicate_shard", shard=f"{index}/{count}", journals=holders[index])
    totals = {total for _, _, total in named}
    if len(totals) > 1:
        exception("total_pages_differs", totals={path: total for path, _, total in named})
    return count, _one(totals)


def union_audit(journals: Sequence[Journal]) -> UnionAudit:
    """Prove the union of N shard journals (each its last run): all shards, one N and one total_pages, every id
    of 0 .. 10*T-1 listed by its page's owner only and delivered exactly once across all of them.

    A journal of an unsharded run counts as shard 0/1. Exception kinds: shard_count_differs, missing_shard,
    duplicate_shard, total_pages_differs, api_differs, foreign_id, listed_twice, unlisted_id, delivered_twice, and journal (a
    journal whose own audit is not OK; its exceptions are in its own audit, under `journals`); not_a_delivery (a
    --dry-run or --limit run: its own audit may be OK, but it does not prove its shard delivered) and undelivered (an
    id listed but neither delivered nor unchanged, in a journal whose own audit did not name it).
    """
    found = Exceptions()
    exception = found.add
    runs = [select_run(journal, None) for journal in journals]
    named = [
        (str(journal.path), journaled_shard(run.settings) or WHOLE, run.total_pages)
        for journal, run in zip(journals, runs)
    ]
    count, total = _shards_fit(named, exception)
    apis = {run.base_url for run in runs}
    if len(apis) > 1:  # shards of one sync talk to one API; journals of two APIs prove nothing together
        exception("api_differs", apis={path: run.base_url for (path, _, _), run in zip(named, runs)})

    listed_by: dict[int, str] = {}
    delivered_by: dict[int, str] = {}
    unchanged: set[int] = set()
    settled: set[int] = set()
    for journal, run, (path, shard, _) in zip(journals, runs, named):
        for animal in listed_animals(journal, run.id):
            if count is not None and shard.owner(animal.id) != shard.index:
                exception("foreign_id", id=animal.id, page=page_of(animal.id), journal=path, shard=str(shard))
            if animal.id in listed_by:
                exception("listed_twice", id=animal.id, journals=[listed_by[animal.id], path])
            listed_by.setdefault(animal.id, path)
            if animal.state is AnimalState.UNCHANGED:
                unchanged.add(animal.id)
            elif animal.state is AnimalState.SETTLED:
                settled.add(animal.id)
            if animal.state in DELIVERED:
                if animal.id in delivered_by:
                    exception("delivered_twice", id=animal.id, journals=[delivered_by[animal.id], path])
                delivered_by.setdefault(animal.id, path)
    if total is not None:
        for animal_id in range(total * PAGE_SIZE):
            if animal_id not in listed_by:
                exception("unlisted_id", id=animal_id, page=page_of(animal_id))

    audits = []
    for journal, run, (path, shard, run_total) in zip(journals, runs, named):
        own = audit(journal)
        audits.append(ShardAudit(path, str(shard), run_total, own))
        if not own.ok:  # its exceptions are listed with it, under `journals`
            exception(
                "journal", journal=path, shard=str(shard), run_state=own.run_state,
                exceptions=dict(own.exception_counts),
            )
        why = partial_run(own)
        if why is not None:  # its own audit can be OK: OK for what it meant to do, which was not to deliver all
            exception("not_a_delivery", journal=path, shard=str(shard), reason=why)
        if own.ok:  # a journal whose own audit passed must still show every id it listed delivered (or unchanged)
            for animal in listed_animals(journal, run.id):
                if animal.id not in delivered_by and animal.id not in unchanged:
                    exception("undelivered", id=animal.id, journal=path, state=animal.state)
    return UnionAudit(
        ok=not found.counts,
        shard_count=count,
        total_pages=total,
        listed=len(listed_by),
        delivered=len(delivered_by),
        settled=len(settled),
        unchanged=len(unchanged),
        journals=tuple(audits),
        exception_counts=found.counts,
        exceptions={kind: tuple(items) for kind, items in found.found.items()},
    )


@dataclass(frozen=True)
class ShardStatus:
    """One journal's status, named by its path."""

    journal: str
    status: Status


@dataclass(frozen=True)
class UnionStatus:
    """Where each shard's run is, and the sums across them; `missing` names the shards with no journal given."""

    shard_count: int | None
    total_pages: int | None
    missing: tuple[int, ...]
    pages_listed: int
    animals: Mapping[str, int]  # by state, summed
    left: int  # animals listed but neither posted nor settled, summed
    journals: tuple[ShardStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return plain(self)


def union_status(journals: Sequence[Journal]) -> UnionStatus:
    """Each journal's status (its last run) and the sums across them, with the shards not given named."""
    reports = [ShardStatus(str(journal.path), status(journal)) for journal in journals]
    shards = [WHOLE if r.status.shard is None else Shard.parse(r.status.shard) for r in reports]
    count = _one({shard.count for shard in shards})
    present = {shard.index for shard in shards}
    animals: dict[str, int] = {}
    for report in reports:
        for state, n in report.status.animals.items():
            animals[state] = animals.get(state, 0) + n
    return UnionStatus(
        shard_count=count,
        total_pages=_one({report.status.pages.total for report in reports}),
        missing=tuple(index for index in range(count or 0) if index not in present),
        pages_listed=sum(report.status.pages.listed for report in reports),
        animals=animals,
        left=sum(report.status.left.animals for report in reports),
        journals=tuple(reports),
    )
