"""One animal's detail fetched and examined on a GET worker thread: the verdict the coordinator journals (sync.py).

Only HTTP (api.py) and pure code (examine.py) run here, so a worker never touches the journal.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..client.api import AnimalsApi, BodyTooLarge
from ..examine import examine

__all__ = ["Fetched", "fetch"]


@dataclass(frozen=True)
class Fetched:
    """A worker's verdict on one detail: a transformed record, or the reason it is quarantined."""

    animal_id: int
    raw: str | bytes | None  # None when the body was refused unread
    transformed: str | None
    reason: str | None
    retries: tuple[str, ...]

    @property
    def attempts(self) -> int:
        """Detail fetches made for this animal: the first, then one per retry (journaled as `animals.attempts`)."""
        return 1 + len(self.retries)


def fetch(api: AnimalsApi, animal_id: int) -> Fetched:
    """One detail fetched and examined, on a worker thread."""
    try:
        detail = api.fetch_detail(animal_id)
    except BodyTooLarge as exc:  # refused unread: bad data to quarantine, like any malformed record
        return Fetched(animal_id, None, None, str(exc), tuple(exc.retries))
    examined = examine(detail.body, animal_id)
    return Fetched(animal_id, examined.raw, examined.transformed, examined.reason, detail.retries)
