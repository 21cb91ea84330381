"""The pages an attempt asks for: its shard's, in order, each once; a page listed, in flight or failed is skipped."""

from __future__ import annotations

from animal_sync.engine.listing import OPENING_PAGES, Listing
from animal_sync.shards import Shard


def test_before_the_total_is_known_the_shards_first_pages_are_asked_for_at_once() -> None:
    """Any listing tells the total, so one stalled first page does not hold the run: the next few bring it."""
    listing, asked = Listing(Shard(2, 4)), []
    while listing.left(None, in_flight=asked):
        asked.append(listing.next_page(None))
    assert asked == [3, 7, 11, 15][:OPENING_PAGES]  # the shard's own pages only
    listing.failed[3] = "502"
    assert not listing.left(None, in_flight=asked[1:])  # a page that failed is not asked for again in this attempt
    assert listing.left(40, in_flight=asked[1:]) and listing.next_page(40) == 19  # the total known: on from there


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
