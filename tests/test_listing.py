"""The pages an attempt asks for: its shard's, in order, each once; a page listed, in flight or failed is skipped."""

from __future__ import annotations

from animal_sync.engine.listing import Listing
from animal_sync.shards import Shard


def test_before_the_total_is_known_only_the_first_page_is_asked_for() -> None:
    listing = Listing(Shard(2, 4))
    assert listing.left(None, in_flight=()) and listing.next_page(None) == 3
    assert not listing.left(None, in_flight={3})  # its answer tells the total: nothing else can be planned before
    listing.failed[3] = "502"
    assert not listing.left(None, in_flight=())  # a page that failed is not asked for again in this attempt


def test_pages_listed_in_flight_or_failed_are_skipped_in_order() -> None:
    listing = Listing(None)
    listing.listed = {1, 2, 4}
    listing.failed[3] = "timed out"
    assert listing.left(6, in_flight={5}) and listing.next_page(6) == 6
    assert not listing.left(6, in_flight={5, 6})
    assert listing.left(7, in_flight={5, 6}) and listing.next_page(7) == 7  # a larger total opens the pages past it


def test_a_shard_steps_through_its_own_pages_only() -> None:
    listing, asked = Listing(Shard(1, 3)), []
    while listing.left(10, in_flight=asked):
        asked.append(listing.next_page(10))
    assert asked == [2, 5, 8] == list(Shard(1, 3).pages(10))
