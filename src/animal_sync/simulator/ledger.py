"""The simulator's ledger: which ids arrived, how often and how well, judged with its own code, never the client's."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from .data import Fault, _base_animal, _faulted_name

__all__ = [
    "DUPLICATE_IDS_CAP",
    "MISMATCH_EXAMPLES_CAP",
    "MISSING_IDS_CAP",
    "exactly_once",
    "expected_home_record",
]

DUPLICATE_IDS_CAP = 10_000
MISMATCH_EXAMPLES_CAP = 20
MISSING_IDS_CAP = 1_000

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def exactly_once(verdict: Mapping[str, Any]) -> bool:
    """Whether a /_verify verdict shows every animal delivered once with the right content: nothing missing,
    no repeat refused, no wrong record. An empty or partial verdict (the simulator did not answer) is not."""
    return all(verdict.get(key) == 0 for key in ("missing", "duplicates_rejected", "content_mismatches"))


def expected_home_record(
    seed: int, animal_id: int, faults: Mapping[int, str] | None = None, revised: frozenset[int] = frozenset()
) -> dict[str, Any]:
    """What a correct client POSTs for this id, by the simulator's own reckoning (not transform.py's).

    `faults` matters only for kinds that change valid data (unicode_name, long_name); for kinds
    that make an animal undeliverable this is still the clean record, which nobody should post.
    `revised`: the ids changed upstream since an earlier run (SimulatorConfig.revised).
    """
    name, born_at, friends = _base_animal(seed, animal_id, animal_id in revised)
    fault = Fault(faults[animal_id]) if faults and animal_id in faults else None
    return {
        "id": animal_id,
        "name": _faulted_name(name, fault),
        "born_at": None if born_at is None else _iso_from_ms(born_at),
        "friends": friends,
    }


def _iso_from_ms(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")


def _epoch_ms(text: str) -> int:
    """Epoch milliseconds of an ISO-8601 string; a naive time is read as UTC, as upstream does."""
    moment = datetime.fromisoformat(text)  # 3.11 reads a trailing "Z" as UTC
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _mismatches(expected: dict[str, Any], got: dict[str, Any]) -> list[dict[str, Any]]:
    """Field-by-field differences between the simulator's expectation and a (well-formed) delivery."""
    found = []
    if got["name"] != expected["name"]:
        found.append(("name", expected["name"], got["name"]))
    want, have = expected["born_at"], got["born_at"]
    if (want is None) != (have is None) or (want is not None and _epoch_ms(want) != _epoch_ms(have)):
        found.append(("born_at", want, have))
    if got["friends"] != expected["friends"]:
        found.append(("friends", expected["friends"], got["friends"]))
    return [{"id": expected["id"], "field": f, "expected": e, "got": g} for f, e, g in found]


class _Ledger:
    """Which ids arrived, how often and how well: the proof behind GET /_verify."""

    def __init__(self, total: int, strict: bool, faulted: frozenset[int]) -> None:
        self.total, self.strict, self.faulted = total, strict, faulted
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every delivery (tests reuse one simulator)."""
        with self._lock:
            self._delivered = bytearray(self.total)  # index = id; 1 once delivered
            self._count = 0
            self._duplicate_ids: set[int] = set()
            self._duplicates_rejected = 0
            self._duplicates_delivered = 0
            self._posts = 0
            self._posts_rejected = 0
            self._posts_partly_taken = 0  # strict refusals that had delivered some ids first
            self._mismatches = 0
            self._examples: list[dict[str, Any]] = []

    def reject(self) -> None:
        """Count a POST turned away for its shape (4xx) once handling began."""
        with self._lock:
            self._posts_rejected += 1

    def accept(self, records: list[dict[str, Any]], expected: Callable[[int], dict[str, Any]]) -> int | None:
        """Record a well-formed batch; returns the id strict mode refused it at, or None if all was taken.

        Strict mode takes the ids one at a time, as the real server does: the ids before the first repeat
        (already delivered, or earlier in this very batch) are delivered, the rest of the batch is not.
        """
        judged = [  # per record, its field differences; judged outside the lock
            None if record["id"] in self.faulted else _mismatches(expected(record["id"]), record)
            for record in records
        ]
        with self._lock:
            delivered = self._delivered
            taken = 0  # records handled before a refusal (all of them when none)
            fresh: list[int] = []
            repeated: list[int] = []
            refused_at = None
            for record in records:
                animal_id = record["id"]
                if delivered[animal_id]:
                    repeated.append(animal_id)
                    if self.strict:
                        refused_at = animal_id
                        break
                else:
                    delivered[animal_id] = 1
                    fresh.append(animal_id)
                taken += 1
            self._count += len(fresh)
            self._note_duplicates(repeated)
            for differences in judged[:taken]:
                if differences:
                    self._mismatches += 1
                    self._examples.extend(differences[: MISMATCH_EXAMPLES_CAP - len(self._examples)])
            if refused_at is not None:
                self._duplicates_rejected += 1
                self._posts_rejected += 1
                self._posts_partly_taken += 1 if fresh else 0
                return refused_at
            self._duplicates_delivered += len(repeated)
            self._posts += 1
            return None

    def _note_duplicates(self, ids: list[int]) -> None:
        for animal_id in ids:
            if len(self._duplicate_ids) >= DUPLICATE_IDS_CAP:
                break
            self._duplicate_ids.add(animal_id)

    def _missing_ids(self) -> list[int]:
        found: list[int] = []
        position = self._delivered.find(0)
        while position != -1 and len(found) < MISSING_IDS_CAP:
            if position not in self.faulted:
                found.append(position)
            position = self._delivered.find(0, position + 1)
        return found

    def report(self) -> dict[str, Any]:
        """The /_verify document."""
        with self._lock:
            faulted_delivered = sorted(i for i in self.faulted if self._delivered[i])
            return {
                "animals": self.total,
                "delivered": self._count,
                "missing": self.total - self._count - (len(self.faulted) - len(faulted_delivered)),
                "missing_ids": self._missing_ids(),
                "faulted_ids": sorted(self.faulted),
                "faulted_delivered": faulted_delivered,
                "duplicates_rejected": self._duplicates_rejected,
                "duplicate_ids": sorted(self._duplicate_ids),
                "duplicates_delivered": self._duplicates_delivered,
                "posts": self._posts,
                "posts_rejected": self._posts_rejected,
                "posts_partly_taken": self._posts_partly_taken,
                "content_mismatches": self._mismatches,
                "mismatch_examples": list(self._examples),
                "strict": self.strict,
            }

