"""The journal's writes: every state change of a run, page, animal, batch or settlement, along the legal edges only.

Each write is atomic on its own and joins the caller's transaction when there is one (`atomic`), so a pipeline
step commits once. An animal or a batch changes state in exactly one place each (`_move_animals`, `_move_batch`),
which asks the transition tables in states.py first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import JournalError
from .reads import JournalReads
from .rows import BatchRow, Delivery, RunRow, SettlementRow, now, settlement_row
from .states import AnimalState, BatchState, Decision, IllegalTransition, JournalChanged, RunState
from .states import check_animal_transition, check_batch_transition  # the movers ask these before every write
from .store import atomic, chunks, placeholders

__all__ = ["ANSWER_ROOM_BASE", "ANSWER_ROOM_PER_ANIMAL", "Journal", "NoRoomForAnswer"]

# Room a batch's answer takes in the WAL: its animals' rows and index entries are rewritten (measured: about
# 600 bytes an animal, 58 KB for 100), with a margin for what other steps commit while the POST is out.
ANSWER_ROOM_BASE = 32 * 1024
ANSWER_ROOM_PER_ANIMAL = 1024
A, B = AnimalState, BatchState


class NoRoomForAnswer(JournalError):
    """The journal's disk has too little room left to record the answer to a batch, so it must not be sent."""

    def __init__(self, path: Path, batch_id: int, animals: int, room: int, needed: int) -> None:
        self.path, self.batch_id, self.animals, self.room, self.needed = path, batch_id, animals, room, needed
        super().__init__(
            f"journal {path}: only {room // 1024} KiB of room left to journal into; the answer to batch {batch_id}"
            f" ({animals} animals) needs about {needed // 1024} KiB, so it was not sent: make room, then resume"
        )


class Journal(JournalReads):
    """One journal file. Open with `Journal.open(path)` for writing or `Journal.open(path, readonly=True)`."""

    # -- runs ------------------------------------------------------------------------------------------------

    def start_run(self, settings: Mapping[str, Any], base_url: str) -> RunRow:
        stamp = now()
        with self.transaction():
            cursor = self.db.execute(
                "INSERT INTO runs (state, settings, base_url, started_at, attempts) VALUES (?, ?, ?, ?, 1)",
                [RunState.RUNNING, json.dumps(dict(settings), sort_keys=True), base_url, stamp],
            )
        return self.run(cursor.lastrowid)

    def resume_run(self, run_id: int) -> RunRow:
        with self.transaction():
            self.db.execute(
                "UPDATE runs SET state = ?, resumed_at = ?, attempts = attempts + 1, finished_at = NULL WHERE id = ?",
                [RunState.RUNNING, now(), run_id],
            )
        return self.run(run_id)

    @atomic
    def record_attempt_url(self, run_id: int, url: str) -> None:
        """The (redacted) API URL this attempt uses; a resume may point the run at a new one."""
        self.db.execute("UPDATE runs SET attempt_url = ? WHERE id = ?", [url, run_id])

    def end_run(self, run_id: int, state: RunState, outcome: Mapping[str, Any]) -> None:
        with self.transaction(durable=True):  # the run's last word, and every answer before it, survive a power cut
            self.db.execute(
                "UPDATE runs SET state = ?, finished_at = ?, outcome = ? WHERE id = ?",
                [state, now(), json.dumps(dict(outcome), sort_keys=True), run_id],
            )

    @atomic
    def set_total_pages(self, run_id: int, total_pages: int) -> None:
        """Keep the largest total the API has reported (the pipeline stops a run whose total changes)."""
        self.db.execute(
            "UPDATE runs SET total_pages = max(coalesce(total_pages, 0), ?) WHERE id = ?", [total_pages, run_id]
        )

    # -- pages and discovery ---------------------------------------------------------------------------------

    @atomic
    def record_page(
        self,
        run_id: int,
        page: int,
        ids: Sequence[int],
        total_pages: int,
        max_new: int | None = None,
        *,
        digest: str | None = None,
        bad_items: Sequence[Mapping[str, Any]] = (),
    ) -> list[int]:
        """Journal a listed page and its ids; return the ids seen for the first time (an id on two pages counts once).

        `max_new` caps how many new ids are taken (test mode's --limit): the rest are not journaled at all.
        `digest` fingerprints what the page listed; `bad_items` are the items set aside, kept with their reason.
        """
        stamp = now()
        new_ids: list[int] = []
        for animal_id in ids:
            if max_new is not None and len(new_ids) >= max_new:
                break
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO animals (run_id, id, page, state, attempts, discovered_at, updated_at)"
                " VALUES (?, ?, ?, ?, 0, ?, ?)",
                [run_id, animal_id, page, AnimalState.DISCOVERED, stamp, stamp],
            )
            if cursor.rowcount:
                new_ids.append(animal_id)
        self.db.execute(
            "INSERT OR REPLACE INTO pages (run_id, page, items, total_pages, listed_at, digest, bad_items)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [run_id, page, len(ids), total_pages, stamp, digest, json.dumps(list(map(dict, bad_items))) if bad_items else None],
        )
        self.set_total_pages(run_id, total_pages)
        return new_ids

    # -- animals ---------------------------------------------------------------------------------------------

    def _move_animals(
        self, run_id: int, ids: Sequence[int], source: AnimalState, target: AnimalState, **columns: Any
    ) -> None:
        """The one place an animal changes state: checks the transition is legal and that every row was in `source`."""
        check_animal_transition(source, target)
        assignments = "".join(f", {name} = ?" for name in columns)
        moved = 0
        for chunk in chunks(ids):
            cursor = self.db.execute(
                f"UPDATE animals SET state = ?, updated_at = ?{assignments}"
                f" WHERE run_id = ? AND state = ? AND id IN ({placeholders(chunk)})",
                [target, now(), *columns.values(), run_id, source, *chunk],
            )
            moved += cursor.rowcount
        if moved != len(ids):
            raise JournalChanged(
                f"journal {self.path}: {len(ids) - moved} of {len(ids)} animals were not {source} (-> {target});"
                " the journal changed under this process (a second writer?)"
            )

    @atomic
    def record_fetched(self, run_id: int, animal_id: int, raw: str | bytes, transformed: str, attempts: int) -> None:
        self._move_animals(
            run_id, [animal_id], A.DISCOVERED, A.FETCHED,
            raw=raw, transformed=transformed, last_error=None, attempts=attempts,
        )

    @atomic
    def record_unchanged(
        self, run_id: int, animal_id: int, raw: str | bytes, transformed: str, attempts: int, since: Delivery
    ) -> None:
        """Fetched, and the very record `since` delivered: kept with a pointer to that delivery, and not sent."""
        self._move_animals(
            run_id, [animal_id], A.DISCOVERED, A.UNCHANGED, raw=raw, transformed=transformed, last_error=None,
            attempts=attempts, delivered_run_id=since.run_id, delivered_batch_id=since.batch_id,
        )

    @atomic
    def record_quarantined(self, run_id: int, animal_id: int, raw: str | bytes | None, reason: str, attempts: int) -> None:
        self._move_animals(
            run_id, [animal_id], A.DISCOVERED, A.QUARANTINED, raw=raw, last_error=reason, attempts=attempts
        )

    @atomic
    def record_fetch_failed(self, run_id: int, animal_id: int, reason: str, attempts: int) -> None:
        self._move_animals(run_id, [animal_id], A.DISCOVERED, A.FAILED, last_error=reason, attempts=attempts)

    @atomic
    def retry_exceptions(self, run_id: int) -> int:
        """Send quarantined and failed animals back to discovered so this attempt tries them again."""
        count = 0
        for state in (A.QUARANTINED, A.FAILED):
            ids = self.animal_ids(run_id, state)
            self._move_animals(run_id, ids, state, A.DISCOVERED, batch_id=None)
            count += len(ids)
        return count

    # -- batches ---------------------------------------------------------------------------------------------

    @atomic
    def create_batch(self, run_id: int, ids: Sequence[int]) -> int:
        """Build a pending batch from fetched animals and bind them to it, in the caller's transaction."""
        cursor = self.db.execute(
            "INSERT INTO batches (run_id, state, ids, size, attempts, created_at) VALUES (?, ?, ?, ?, 0, ?)",
            [run_id, B.PENDING, json.dumps(list(ids)), len(ids), now()],
        )
        batch_id = cursor.lastrowid
        self._move_animals(run_id, ids, A.FETCHED, A.BATCHED, batch_id=batch_id)
        return batch_id

    def _move_batch(self, batch_id: int, source: BatchState, target: BatchState, **columns: Any) -> None:
        """The one place a batch changes state."""
        check_batch_transition(source, target)
        assignments = "".join(f", {name} = ?" for name in columns)
        cursor = self.db.execute(
            f"UPDATE batches SET state = ?{assignments} WHERE id = ? AND state = ?",
            [target, *columns.values(), batch_id, source],
        )
        if cursor.rowcount != 1:
            raise JournalChanged(
                f"journal {self.path}: batch {batch_id} was not {source} (-> {target});"
                " the journal changed under this process (a second writer?)"
            )

    def check_room_for_answer(self, batch: BatchRow) -> None:
        """Refuse to send a batch whose answer the journal may have no room to record: it would come back in doubt.

        A successful commit proves nothing here: on a full disk a small commit (the `sending` mark, a resume's
        first writes) still fits in the WAL space a failed larger commit left allocated, while the answer, which
        rewrites every animal of the batch, does not. So the room is measured. It is a check, not a reservation:
        a disk someone else fills while the POST is out still fails the answer's commit, which then names it.
        """
        others = self.db.execute(
            "SELECT count(*) FROM batches WHERE run_id = ? AND state IN (?, ?) AND id != ?",
            [batch.run_id, B.WITHHELD, B.SENDING, batch.id],
        ).fetchone()[0]
        in_flight = others + 1
        animals = in_flight * len(batch.ids)  # batches in flight are about this size; all their answers need room
        needed = in_flight * ANSWER_ROOM_BASE + animals * ANSWER_ROOM_PER_ANIMAL
        room = self.room()
        if room < needed:
            raise NoRoomForAnswer(self.path, batch.id, len(batch.ids), room, needed)

    @atomic
    def mark_withheld(self, batch: BatchRow) -> None:
        """Journaled (committed, not fsynced) as the POST leaves with its body held back: a kill now leaves it unsent.

        Only when the journal has room to record the answer: a POST whose answer cannot be journaled is a
        delivery the next resume cannot know of.
        """
        self.check_room_for_answer(batch)
        self._move_batch(batch.id, batch.state, B.WITHHELD)

    @atomic
    def mark_sending(self, batch: BatchRow) -> None:
        """The write-ahead mark of a send, committed durably by the caller *before* the body is released.

        From here a kill leaves the batch in doubt; before it (`withheld`) the body provably never left. The room
        for the answer is measured again: the disk may have filled while the POST waited for `100 Continue`, and
        a body withheld now is still provably unsent.
        """
        self.check_room_for_answer(batch)
        self._move_batch(batch.id, batch.state, B.SENDING, sent_at=now())
        self.db.execute("UPDATE batches SET attempts = attempts + 1 WHERE id = ?", [batch.id])

    @atomic
    def mark_posted(self, batch: BatchRow, status: int, body: str, assumption: str | None = None) -> None:
        """Answered 2xx; `assumption` names what the delivery rests on when a 5xx before it was not proven unread.

        One journaled by an earlier send of the batch (`unsend`) is kept: that 5xx is still part of its story.
        """
        self._move_batch(
            batch.id, batch.state, B.POSTED, response_status=status, response_body=body, finished_at=now(),
            assumption=assumption or batch.assumption,
        )
        self._move_animals(batch.run_id, batch.ids, A.BATCHED, A.POSTED)

    @atomic
    def mark_failed(
        self, batch: BatchRow, status: int | None, body: str | None, error: str, assumption: str | None = None
    ) -> None:
        """The server refused the batch: nothing was delivered, so its animals are failed with the answer kept.

        `assumption` names what "nothing was delivered" rests on when the refusal is not proven to come unread.
        """
        self._move_batch(
            batch.id, batch.state, B.FAILED,
            response_status=status, response_body=body, last_error=error, finished_at=now(),
            assumption=assumption or batch.assumption,
        )
        self._move_animals(batch.run_id, batch.ids, A.BATCHED, A.FAILED, last_error=error)

    @atomic
    def mark_refused_for_split(self, batch: BatchRow, status: int | None, body: str | None, error: str) -> None:
        """The API refused the whole batch for a record it holds: nothing was delivered, so the animals go back
        to fetched (the refusal is kept on this batch) to be re-sent in smaller batches that isolate the bad record."""
        self._move_batch(
            batch.id, batch.state, B.FAILED,
            response_status=status, response_body=body, last_error=f"{error} (split to isolate it)", finished_at=now(),
        )
        self._move_animals(batch.run_id, batch.ids, A.BATCHED, A.FETCHED, batch_id=None)

    @atomic
    def mark_in_doubt(self, batch: BatchRow, error: str, status: int | None = None, body: str | None = None) -> None:
        """Outcome unknown: keep its animals bound to it, and remember for good that it was once in doubt."""
        self._move_batch(
            batch.id, batch.state, B.IN_DOUBT,
            last_error=error, response_status=status, response_body=body, finished_at=now(),
        )
        self.db.execute("UPDATE batches SET in_doubt_at = coalesce(in_doubt_at, ?) WHERE id = ?", [now(), batch.id])

    @atomic
    def unsend(self, batch: BatchRow, error: str, assumption: str | None = None) -> None:
        """The POST never reached the API (no connection): the batch is as good as never sent.

        Unless a try of it was answered by an unproven 5xx and re-sent: `assumption` says so, and stays with the batch.
        """
        self._move_batch(batch.id, batch.state, B.PENDING, last_error=error, assumption=assumption or batch.assumption)

    @atomic
    def sending_to_in_doubt(self, run_id: int) -> list[int]:
        """At start-up a batch still `sending` was in flight when the last process died: it is in doubt."""
        stale = self.batches(run_id, B.SENDING)
        for batch in stale:
            self.mark_in_doubt(batch, "the process stopped while this batch's POST was in flight")
        return [batch.id for batch in stale]

    @atomic
    def withheld_to_unsent(self, run_id: int) -> list[int]:
        """At start-up a batch still `withheld` lost its process before its body left: provably not sent.

        A first send goes back to pending (sent again as a first send); a re-send of an in-doubt batch goes back
        to in_doubt, exactly as doubtful as its earlier send left it.
        """
        stale = self.batches(run_id, B.WITHHELD)
        for batch in stale:
            if batch.in_doubt_at is None:
                self._move_batch(
                    batch.id, B.WITHHELD, B.PENDING,
                    last_error="the process stopped before this batch's body was released: never sent",
                )
            else:
                self._move_batch(batch.id, B.WITHHELD, B.IN_DOUBT)
        return [batch.id for batch in stale]

    # -- settlements -----------------------------------------------------------------------------------------

    @atomic
    def record_settlement(self, batch: BatchRow, decision: Decision, reason: str, user: str) -> SettlementRow:
        """Journal a person's decision about a batch and apply it, in one transaction.

        delivered: an in-doubt batch and its animals become settled; a batch already posted after a doubt keeps
        its state (the row is the person's acceptance of it). resend: an in-doubt batch goes back to pending.
        """
        if decision is Decision.RESEND:
            self._move_batch(batch.id, B.IN_DOUBT, B.PENDING)
        elif batch.state is B.POSTED:
            if batch.in_doubt_at is None:
                raise IllegalTransition(f"batch {batch.id} was posted without doubt: there is nothing to settle")
        else:
            self._move_batch(batch.id, B.IN_DOUBT, B.SETTLED, finished_at=now())
            self._move_animals(batch.run_id, batch.ids, A.BATCHED, A.SETTLED)
        cursor = self.db.execute(
            "INSERT INTO settlements (run_id, batch_id, decision, reason, user, settled_at, attempts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [batch.run_id, batch.id, decision, reason, user, now(), batch.attempts],
        )
        row = next(self.db.query("SELECT * FROM settlements WHERE id = ?", [cursor.lastrowid]))
        return settlement_row(row)

    # -- counters --------------------------------------------------------------------------------------------

    @atomic
    def add_counters(self, run_id: int, counts: Mapping[str, int]) -> None:
        self.db.conn.executemany(
            "INSERT INTO counters (run_id, name, value) VALUES (?, ?, ?)"
            " ON CONFLICT (run_id, name) DO UPDATE SET value = value + excluded.value",
            [(run_id, name, value) for name, value in counts.items() if value],
        )
