"""What one attempt reports: live `Progress` while it runs, and at its end a `RunResult` with a typed `RunOutcome`.

`conclude` says how the attempt ended from what it saw, in words that name no command: the CLI maps the outcome
to an exit code and to the commands that come next.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ..journal import AnimalState, RunState

__all__ = ["Progress", "RunOutcome", "RunResult", "Seen", "conclude", "count_retries", "summary"]


@dataclass
class Progress:
    """Live figures for progress bars and periodic log lines; updated by the coordinator only."""

    run_id: int | None = None
    total_pages: int | None = None
    pages_listed: int = 0
    discovered: int = 0
    fetched: int = 0
    posted: int = 0
    unchanged: int = 0  # --incremental: fetched, and the record an earlier run delivered, so not sent
    quarantined: int = 0
    failed: int = 0
    retries: int = 0
    pages_owned: int | None = None  # of total_pages, those a sharded run lists (None: all of them)

    @property
    def pages_planned(self) -> int | None:
        """The pages this run lists once the total is known: its shard's, or all of them."""
        return self.total_pages if self.pages_owned is None else self.pages_owned


def count_retries(counters: Counter[str], progress: Progress, kinds: Sequence[str]) -> None:
    """Count each retry a request made by its kind, for the journal's counters and the live figures."""
    for kind in kinds:
        counters[f"retry_{kind}"] += 1
    progress.retries += len(kinds)


class RunOutcome(StrEnum):
    """Why an attempt ended: what happened, not what it means to a shell (the CLI maps it to an exit code)."""

    CLEAN = "clean"  # finished, every animal posted (or, dry, transformed) and nothing in doubt
    EXCEPTIONS = "exceptions"  # finished with failed, quarantined, in-doubt, unlisted or re-sent-after-doubt animals
    CREDENTIAL_REFUSED = "credential_refused"  # 401/403: nothing passes until the credential changes
    UPSTREAM_CHANGED = "upstream_changed"  # the data set under the run's ids is another one
    UNREACHABLE = "unreachable"  # the API stopped answering
    STOPPED = "stopped"  # a stop was asked for (Ctrl-C, SIGTERM, SIGHUP)
    CHECK_FAILED = "check_failed"  # a resume could not re-list a page to check the data set
    NEVER_LISTED = "never_listed"  # page 1 never answered with a listing
    EMPTY_PAGES = "empty_pages"  # pages inside the claimed total listed nothing: the total cannot be believed


@dataclass(frozen=True)
class RunResult:
    """How an attempt ended, for the CLI's exit code and closing line."""

    run_id: int
    state: RunState
    outcome: RunOutcome
    message: str
    counts: dict[str, int] = field(default_factory=dict)
    in_doubt: tuple[int, ...] = ()
    resent: tuple[int, ...] = ()  # batches posted at least once after a doubt: a person may settle them
    base_url: str = ""  # the API this attempt used, redacted: a new run suggested after it goes there too


@dataclass(frozen=True)
class Seen:
    """What an attempt saw that decides how it ended; the journal's counts come with it."""

    refused: str | None  # the credential was refused (401/403)
    changed: str | None  # the upstream drew another data set
    unreachable: str | None  # the API stopped answering
    stopped: bool  # a stop was asked for
    check_failed: str | None  # a resume could not check the data set
    listing_started: bool  # page 1 answered with a listing
    failed_pages: dict[int, str]
    dry_run: bool
    empty_pages: tuple[int, ...] = ()  # pages inside the claimed total that listed no item
    total_pages: int | None = None  # the total the API claimed


def conclude(
    seen: Seen, counts: dict[str, int], in_doubt: tuple[int, ...], bad_items: int, resent: list[int]
) -> tuple[RunState, RunOutcome, str]:
    """The run's state, the attempt's outcome and its closing line; the first reason to stop wins."""
    if seen.refused is not None:
        return RunState.INTERRUPTED, RunOutcome.CREDENTIAL_REFUSED, (
            f"the Animals API refused the credential ({seen.refused}); the journal is consistent"
        )
    if seen.changed is not None:
        return RunState.INTERRUPTED, RunOutcome.UPSTREAM_CHANGED, (
            f"the upstream data set changed under this run: {seen.changed}. Its ids now name other animals"
            " than the journaled ones, so the run stopped instead of mixing two data sets (nothing more was"
            " fetched or posted)"
        )
    if seen.unreachable is not None:
        return RunState.INTERRUPTED, RunOutcome.UNREACHABLE, (
            f"the Animals API stopped answering ({seen.unreachable}); the journal is consistent"
        )
    if seen.stopped:
        return RunState.INTERRUPTED, RunOutcome.STOPPED, (
            "stopped; the journal is consistent"
        )
    if seen.empty_pages:
        pages = sorted(seen.empty_pages)
        named = ", ".join(map(str, pages[:10])) + (f" and {len(pages) - 10} more" if len(pages) > 10 else "")
        return RunState.INTERRUPTED, RunOutcome.EMPTY_PAGES, (
            f"the Animals API claims {seen.total_pages} pages, but page{'s' if len(pages) > 1 else ''} {named} inside"
            " that range listed no animals, so its page count cannot be believed and the run stopped (nothing of"
            " the empty pages was journaled)"
        )
    if seen.check_failed is not None:
        return RunState.INTERRUPTED, RunOutcome.CHECK_FAILED, (
            f"{seen.check_failed}; nothing was fetched or posted"
        )
    if not seen.listing_started:  # the first page (page 1, or a shard's own) never answered: nothing was synced
        first = min(seen.failed_pages, default=1)
        reason = seen.failed_pages.get(first, "no answer")
        return RunState.INTERRUPTED, RunOutcome.NEVER_LISTED, (
            f"the listing never started: page {first} could not be listed ({reason})"
        )
    unfinished = [AnimalState.QUARANTINED, AnimalState.FAILED, AnimalState.BATCHED, AnimalState.DISCOVERED]
    if not seen.dry_run:
        unfinished.append(AnimalState.FETCHED)
    exceptions = (
        sum(counts.get(state, 0) for state in unfinished)
        + len(in_doubt) + len(seen.failed_pages) + bad_items + len(resent)
    )
    outcome = RunOutcome.CLEAN if exceptions == 0 else RunOutcome.EXCEPTIONS
    return RunState.FINISHED, outcome, summary(counts, in_doubt, seen.failed_pages, bad_items, seen.dry_run, resent)


def summary(  # a finished run's closing line
    counts: dict[str, int],
    in_doubt: tuple[int, ...],
    failed_pages: dict[int, str],
    bad_items: int,
    dry_run: bool,
    resent: list[int],
) -> str:
    posted = counts.get(AnimalState.POSTED, 0)
    fetched = counts.get(AnimalState.FETCHED, 0) + counts.get(AnimalState.BATCHED, 0)
    parts = [f"{_count(posted, 'animal')} posted" if not dry_run else f"dry run: {_count(fetched, 'animal')} fetched and transformed, none posted"]
    if counts.get(AnimalState.UNCHANGED):  # not an exception: part of the first figure, not a part of its own
        parts[0] += f" and {counts[AnimalState.UNCHANGED]} unchanged since an earlier delivery"
    for state in (AnimalState.QUARANTINED, AnimalState.FAILED):
        if counts.get(state):
            parts.append(f"{counts[state]} {state}")
    if in_doubt:
        parts.append(f"{_count(len(in_doubt), 'batch', 'batches')} in doubt ({', '.join(map(str, in_doubt[:10]))})")
    if failed_pages:
        parts.append(f"{_count(len(failed_pages), 'page')} could not be listed")
    if bad_items:
        parts.append(f"{_count(bad_items, 'listing item')} set aside (an id the journal cannot hold)")
    if resent:
        parts.append(f"{_count(len(resent), 'batch', 'batches')} posted at least once after doubt ({', '.join(map(str, resent[:10]))})")
    return ", ".join(parts)


def _count(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"
