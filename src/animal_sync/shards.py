"""A shard of the page space: `run --shard I/N` lists, fetches and posts only the pages shard I owns.

Page p belongs to shard (p - 1) % N. Interleaved, not in ranges, because the total is not known before the first
listing and may be anything from 500 to 600 pages: every shard still gets every N-th page, so the shards stay even.
The API's ids are positions (page p holds ids 10(p-1) .. 10p-1), so an id's owner follows from its page.
A shard's first page also tells it total_pages, so no shard needs to list a page it does not own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, JournalError

__all__ = ["PAGE_SIZE", "Shard", "ShardMismatch", "check_same_shard", "journaled_shard", "page_of"]

PAGE_SIZE = 10  # the API's page size, fixed: ids are positions in the listing
_RULE = "must be I/N: N shards of the page space (N >= 1) and this one's 0-based index I (0 <= I < N)"
_SHARD = re.compile(r"([0-9]{1,9})\s*/\s*([0-9]{1,9})")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: it owns pages index+1, index+1+count, ... (0/1 is the whole page space)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ConfigError("shard", str(self), _RULE)

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N` as a person or a Kubernetes Indexed Job writes it, e.g. `3/8`; a ConfigError names the rule."""
        found = _SHARD.fullmatch(text.strip())  # ASCII digits only: str.isdigit() also takes "²", which int() refuses
        if found is None:
            raise ConfigError("shard", text, _RULE)
        return cls(int(found[1]), int(found[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def first_page(self) -> int:
        """The first page this shard lists; its answer carries total_pages like any listing."""
        return self.index + 1

    def owns(self, page: int) -> bool:
        return page >= 1 and (page - 1) % self.count == self.index

    def pages(self, total_pages: int) -> range:
        """The pages of `total_pages` this shard owns, in order."""
        return range(self.first_page, total_pages + 1, self.count)

    def owner(self, animal_id: int) -> int:
        """The index of the shard of this shard's count that owns the id's page."""
        return (page_of(animal_id) - 1) % self.count


WHOLE = Shard(0, 1)  # an unsharded run owns every page


def page_of(animal_id: int) -> int:
    """The page the API lists an id on."""
    return animal_id // PAGE_SIZE + 1


def journaled_shard(settings: Mapping[str, Any]) -> Shard | None:
    """The shard a run's journaled settings name, or None for a run of the whole page space."""
    text = settings.get("shard")
    return Shard.parse(str(text)) if text else None


class ShardMismatch(JournalError):
    """A run asked for another shard (or shard count) than the journal's: each shard keeps its own journal."""

    def __init__(self, path: Path, journaled: Shard | None, given: Shard | None) -> None:
        self.path, self.journaled, self.given = path, journaled, given
        super().__init__(
            f"journal {path} belongs to {_name(journaled)}, not {_name(given)}: each shard keeps its own journal"
            " (e.g. shard-I.db); use that shard's journal, or a new one"
        )


def _name(shard: Shard | None) -> str:
    return "the whole page space (unsharded)" if shard in (None, WHOLE) else f"shard {shard}"


def check_same_shard(path: Path, journaled: Mapping[str, Any], given: Shard | None) -> None:
    """Refuse (ShardMismatch) a run whose shard differs from the one the journal's last run was for."""
    before = journaled_shard(journaled)
    if (before or WHOLE) != (given or WHOLE):
        raise ShardMismatch(path, before, given)
