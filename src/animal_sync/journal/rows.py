"""The journal's rows as frozen values, and how an SQLite row becomes one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .states import BatchState, Decision, RunState

__all__ = ["BatchRow", "Delivery", "RunRow", "SettlementRow", "batch_row", "now", "run_row", "settlement_row"]


@dataclass(frozen=True)
class RunRow:
    id: int
    state: RunState
    settings: dict[str, Any]
    base_url: str
    total_pages: int | None
    started_at: str
    resumed_at: str | None
    attempts: int
    finished_at: str | None
    outcome: dict[str, Any] | None


@dataclass(frozen=True)
class BatchRow:
    id: int
    run_id: int
    state: BatchState
    ids: tuple[int, ...]
    attempts: int
    response_status: int | None
    response_body: str | None
    last_error: str | None
    in_doubt_at: str | None
    assumption: str | None = None  # what its outcome rests on when not proven (see outcomes.PostResult.assumption)


@dataclass(frozen=True)
class Delivery:
    """Where an id's record was last delivered (posted, or settled as delivered) in an earlier run, and what it was."""

    run_id: int
    batch_id: int
    transformed: str  # the canonical JSON that went out


@dataclass(frozen=True)
class SettlementRow:
    id: int
    run_id: int
    batch_id: int
    decision: Decision
    reason: str
    user: str
    settled_at: str
    attempts: int  # the batch's POSTs when it was settled


def now() -> str:
    """UTC timestamp with milliseconds, the one form every journal column uses."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_row(row: Mapping[str, Any]) -> RunRow:
    """A `runs` row, its JSON columns decoded."""
    return RunRow(
        id=row["id"],
        state=RunState(row["state"]),
        settings=json.loads(row["settings"] or "{}"),
        base_url=row["base_url"],
        total_pages=row["total_pages"],
        started_at=row["started_at"],
        resumed_at=row["resumed_at"],
        attempts=row["attempts"],
        finished_at=row["finished_at"],
        outcome=json.loads(row["outcome"]) if row["outcome"] else None,
    )


def batch_row(row: Mapping[str, Any]) -> BatchRow:
    """A `batches` row, its ids (a JSON array) as a tuple."""
    return BatchRow(
        id=row["id"],
        run_id=row["run_id"],
        state=BatchState(row["state"]),
        ids=tuple(json.loads(row["ids"])),
        attempts=row["attempts"],
        response_status=row["response_status"],
        response_body=row["response_body"],
        last_error=row["last_error"],
        in_doubt_at=row["in_doubt_at"],
        assumption=row.get("assumption"),
    )


def settlement_row(row: Mapping[str, Any]) -> SettlementRow:
    """A `settlements` row."""
    return SettlementRow(
        id=row["id"],
        run_id=row["run_id"],
        batch_id=row["batch_id"],
        decision=Decision(row["decision"]),
        reason=row["reason"],
        user=row["user"],
        settled_at=row["settled_at"],
        attempts=row["attempts"],
    )

