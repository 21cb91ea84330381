"""Which pages an attempt asks the API to list, and in what order: its shard's pages, each at most once.

Kept by the coordinator (sync.py), which alone journals what a listing brings; this only plans the next page.
"""

from __future__ import annotations

from collections.abc import Collection

from ..shards import WHOLE, Shard

__all__ = ["OPENING_PAGES", "Listing"]

# Pages asked for before the total is known. Any listing tells total_pages, so the first few go out at once: a
# stall on the first page (1 request in 100) then no longer holds the whole run for a cut at the ceiling (1 s, no
# answers seen yet), since the others bring the total. A page past the total answers `items: []` and is set aside.
OPENING_PAGES = 4


class Listing:
    """The pages of one attempt: those listed (journaled before, or since), those failed in it, the next to ask for.

    A page that fails is not asked for again in the same attempt: the attempt ends naming it, and a resume lists it.
    """

    def __init__(self, shard: Shard | None) -> None:
        self.shard = shard or WHOLE  # the pages this run lists: every N-th from its first (all without a shard)
        self.listed: set[int] = set()
        self.failed: dict[int, str] = {}  # page -> why it could not be listed in this attempt
        self._next = self.shard.first_page

    def left(self, total: int | None, in_flight: Collection[int]) -> bool:
        """Pages still to ask for in this attempt (not listed, not in flight, not failed already)."""
        limit = self._opening_limit() if total is None else total
        while self._next <= limit and not self._open(self._next, in_flight):
            self._next += self.shard.count
        return self._next <= limit

    def next_page(self, total: int | None) -> int:
        """The page to ask for next (after `left` said there is one): before the total is known, one of the
        shard's first OPENING_PAGES pages."""
        return self._next

    def _opening_limit(self) -> int:
        return self.shard.first_page + (OPENING_PAGES - 1) * self.shard.count

    def _open(self, page: int, in_flight: Collection[int]) -> bool:
        return page not in self.listed and page not in self.failed and page not in in_flight
