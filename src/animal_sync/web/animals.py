"""The animals page's data: a search by id or name across the journals' last runs, one page at a time, each animal
with its record as received and as posted and the batch that carried it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import JournalError
from ..journal import AnimalRecord, BatchSummary, Journal, count_matching_animals, find_animals, find_batches, select_run

__all__ = ["PAGE_SIZE", "AnimalsPage", "FoundAnimal", "search"]

PAGE_SIZE = 20


@dataclass(frozen=True)
class FoundAnimal:
    journal: str
    record: AnimalRecord
    batch: BatchSummary | None

    @property
    def name(self) -> str | None:
        for payload in (self.record.transformed, self.record.raw):
            try:
                found = json.loads(payload) if payload is not None else None
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(found, dict) and "name" in found:
                return str(found["name"])
        return None


@dataclass(frozen=True)
class AnimalsPage:
    text: str
    page: int  # 1-based
    pages: int
    total: int
    animals: tuple[FoundAnimal, ...]
    problems: tuple[str, ...]  # journals that could not be read, in words


def pretty(payload: str | bytes | None) -> str:
    """A payload for people: indented JSON when it is JSON, else the text as received (bytes decoded leniently)."""
    if payload is None:
        return ""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def search(journals: Sequence[str], text: str = "", page: int = 1, size: int = PAGE_SIZE) -> AnimalsPage:
    """The page-th page of animals matching `text` across the journals (in the order given, then by id)."""
    page = max(1, page)
    skip, wanted = (page - 1) * size, size
    total = 0
    found: list[FoundAnimal] = []
    problems: list[str] = []
    for name in journals:
        if not Path(name).exists():
            problems.append(f"no journal at {name} yet")
            continue
        try:
            with Journal.open(name, readonly=True) as journal:
                run = select_run(journal, None)
                matching = count_matching_animals(journal, run.id, text)
                total += matching
                if wanted and skip < matching:
                    records = find_animals(journal, run.id, text, offset=skip, limit=wanted)
                    batches = find_batches(journal, sorted({r.batch_id for r in records if r.batch_id is not None}))
                    found += [FoundAnimal(name, r, batches.get(r.batch_id) if r.batch_id is not None else None) for r in records]
                    wanted -= len(records)
                skip = max(0, skip - matching)
        except JournalError as exc:
            problems.append(str(exc))
    return AnimalsPage(text, page, max(1, -(-total // size)), total, tuple(found), tuple(problems))
