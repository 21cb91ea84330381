"""Whether the upstream still serves the run's data set: ids are positions, so a restarted API serves other animals
under the journaled ids, and one run must never mix two data sets.

The check lists one page again and compares its total and its digest with what the run journaled for that page
(any page listed again is compared with its stored digest). A resume is checked before anything is fetched or sent;
a failed detail, and a long run now and then, check again. And no batch leaves before a check that started after the
batch was built has come back the same (`covers`): a restart with the same page count between a detail's fetch and
its batch's POST is then caught before any animal of the new data set is sent. One check covers every batch built
before it started, so this costs at most one GET a batch (measured: docs/benchmarks.md, "The data-set check before
each batch").
`UpstreamCheck` holds that state and decides; the coordinator schedules its GETs and journals nothing of a change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..client.api import Page

__all__ = ["CHECK_TRIES", "RECHECK_EVERY", "RECHECK_SECONDS", "UpstreamCheck"]

RECHECK_SECONDS = 2.0  # a failed detail re-lists the first page to see whether the data set changed, at most this often
RECHECK_EVERY = 30.0  # and so does a long run now and then: a restart that fails nothing is still found
CHECK_TRIES = 3  # a resume's check failing this often, RECHECK_SECONDS apart, stops it: chaos fails one, not three


def _periodic() -> float:
    return time.monotonic() + RECHECK_EVERY


@dataclass
class UpstreamCheck:
    """The check's state for one attempt; changed by the coordinator thread only."""

    baseline: tuple[int, str | None] | None = None  # (page, digest) listed again to compare
    verified: bool = True  # False until a resumed run's data set is known to be the same
    changed: str | None = None  # how the upstream changed under this run; the run stops
    failed: str | None = None  # why a resume could not check; the run stops
    failures: int = 0  # a resume's checks that got no listing; the attempt stops at CHECK_TRIES
    due: bool = False  # a failed detail asked for a check
    last: float = float("-inf")
    next_periodic: float = field(default_factory=_periodic)
    started_at: float | None = None  # when the check in flight was asked for
    checked_through: float = float("-inf")  # the start of the latest check that found the data set the same

    def covers(self, built_at: float) -> bool:
        """Whether a check that started after this moment (a batch was built) found the data set the same."""
        return built_at <= self.checked_through

    def resume_from(self, baseline: tuple[int, str | None] | None) -> None:
        """Take the journaled baseline; with none (nothing listed yet) the first page answered sets it."""
        self.baseline = baseline
        self.verified = baseline is None

    def wanted(self, now: float, idle: bool) -> bool:
        """A check is asked for (and it has waited long enough, or nothing else is left), or the periodic one is due."""
        return (self.due and (idle or now - self.last >= RECHECK_SECONDS)) or now >= self.next_periodic

    def start(self, now: float, page: int | None = None) -> int | None:
        """The page to list again now (`page`, or the baseline), or None when nothing was listed yet to compare with."""
        self.due = False
        if self.baseline is None:
            return None
        self.last = now
        self.started_at = now
        self.next_periodic = now + RECHECK_EVERY
        return self.baseline[0] if page is None else page

    def same(self) -> None:
        """The check in flight found the data set the same: every batch built before it started may go."""
        if self.started_at is not None:
            self.checked_through = max(self.checked_through, self.started_at)
        self.started_at = None
        self.verified = True
        self.failures = 0

    def difference(self, page: Page, total: int | None, stored: str | None) -> str | None:
        """How this listing contradicts what the run journaled, or None: the total, or the digest `stored` for
        this page when it was listed before."""
        if total is not None and page.total_pages != total:
            fewer = "fewer pages: ids it listed are gone" if page.total_pages < total else "more pages"
            return f"total_pages was {total}, the API now says {page.total_pages} ({fewer})"
        if stored is not None and page.digest is not None and stored != page.digest:
            return f"page {page.page} now lists other animals under the same ids"
        return None

    def change(self, what: str) -> bool:
        """Record the first change seen; True when it is news (the caller counts and logs it once)."""
        if self.changed is not None:
            return False
        self.changed = what
        return True

    def listed(self, page: Page) -> None:
        """A page was journaled: the first listed page is the baseline."""
        if self.baseline is None or page.page < self.baseline[0]:
            self.baseline = (page.page, page.digest)

    def retry_due(self, now: float) -> bool:
        """A resume's failed check is tried again once RECHECK_SECONDS have passed since it failed."""
        return now - self.last >= RECHECK_SECONDS

    def could_not_check(self, page: int, reason: str, now: float, gating: bool = False) -> None:
        """A check's listing failed: a resume, or a batch waiting to be sent (`gating`), cannot go on without knowing
        the data set is the same, but chaos fails one listing now and then, so only CHECK_TRIES failures in a row
        stop it."""
        self.started_at = None
        if self.verified and not gating:
            return
        self.failures += 1
        self.last = now  # the next try waits RECHECK_SECONDS from this failure
        self.due = True  # and keeps the loop from ending before it
        if self.failures >= CHECK_TRIES:
            self.failed = (
                f"page {page} could not be listed again to check the data set ({reason}; {self.failures} checks failed)"
            )
