"""Integration tests for animal_sync.journal: real SQLite files in tmp_path, real child processes, no mocks."""

from __future__ import annotations

import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from itertools import product
from pathlib import Path

import pytest

from animal_sync.cli import main
from animal_sync.errors import JournalEmpty, JournalError
from animal_sync.journal import (
    ANIMAL_TRANSITIONS,
    BATCH_TRANSITIONS,
    AnimalState,
    BatchState,
    Decision,
    Delivery,
    IllegalTransition,
    Journal,
    JournalRolledBack,
    NoRoomForAnswer,
    RunState,
    check_animal_transition,
    check_batch_transition,
    iter_animals,
)

A, B = AnimalState, BatchState
SCHEMA_STEPS = Path(__file__).resolve().parents[1] / "migrations"
MIGRATIONS = [("animal_sync", "0001_initial"), ("animal_sync", "0002_settlements")]  # the first steps, in order


@pytest.fixture
def path(tmp_path):
    return tmp_path / "journal.db"


@pytest.fixture
def journal(path):
    journal = Journal.open(path)
    yield journal
    journal.close()


@pytest.fixture
def run_id(journal):
    return journal.start_run({"batch_size": 2}, "http://api.test").id


def fetch(journal, run_id, *ids):
    for animal_id in ids:
        journal.record_fetched(run_id, animal_id, json.dumps({"id": animal_id}), json.dumps({"id": animal_id}), attempts=1)


def batch_of(journal, run_id, *ids):
    """A pending batch of freshly listed and fetched animals, built in one step as the pipeline does."""
    with journal.transaction():
        journal.record_page(run_id, 1, list(ids), total_pages=1)
        fetch(journal, run_id, *ids)
        return journal.batch(journal.create_batch(run_id, ids))


def send(journal, batch):
    """The two marks of a send: its POST out with the body held back, then the body released."""
    journal.mark_withheld(batch)
    journal.mark_sending(journal.batch(batch.id))


def sending(journal, run_id, *ids):
    batch = batch_of(journal, run_id, *ids)
    with journal.transaction():
        send(journal, batch)
    return journal.batch(batch.id)


def animal_states(journal, run_id):
    return {row["id"]: row["state"] for row in journal.db.query("SELECT id, state FROM animals WHERE run_id = ?", [run_id])}


def snapshot(journal):
    """Every row the journal holds, to show that a refused step changed nothing."""
    return {
        table: list(journal.db.query(f"SELECT * FROM {table} ORDER BY rowid"))
        for table in ("runs", "pages", "animals", "batches", "counters", "settlements")
    }


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


def child(code: str, *args: str) -> subprocess.Popen[str]:
    """A Python child process running `code`; it prints one line when it is ready to be observed or killed."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(proc: subprocess.Popen[str], line: str) -> None:
    got = proc.stdout.readline().strip()
    if got != line:
        proc.kill()
        pytest.fail(f"child said {got!r}, not {line!r}: {proc.stderr.read()}")


def kill_9(proc: subprocess.Popen[str]) -> None:
    proc.kill()  # SIGKILL: no atexit, no finally, no close()
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()
    proc.stdin.close()
    assert proc.returncode == -9


# --- opening and migrating ----------------------------------------------------------------


def test_open_creates_the_file_and_applies_the_migrations(path):
    assert not path.exists()
    journal = Journal.open(path)
    try:
        assert path.is_file()
        applied = [tuple(row) for row in journal.db.execute("SELECT migration_set, name FROM _sqlite_migrations")]
        assert applied[: len(MIGRATIONS)] == MIGRATIONS
        assert applied == [("animal_sync", step.stem) for step in sorted(SCHEMA_STEPS.glob("[0-9]*.py"))]
        assert {"runs", "pages", "animals", "batches", "counters", "settlements"} <= set(journal.db.table_names())
        assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert journal.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: durable steps ask for FULL
    finally:
        journal.close()


def test_a_durable_transaction_commits_under_full_sync_and_only_that_one(path):
    journal = Journal.open(path)
    try:
        synchronous = lambda: journal.db.execute("PRAGMA synchronous").fetchone()[0]  # noqa: E731
        with journal.transaction(durable=True):
            assert synchronous() == 2  # FULL: this commit is fsynced (and, in WAL, all before it)
            with journal.transaction(durable=True):  # nested: joins the outer one, changes nothing
                assert synchronous() == 2
        assert synchronous() == 1
        with journal.transaction():
            assert synchronous() == 1
        with pytest.raises(RuntimeError), journal.transaction(durable=True):
            raise RuntimeError("rolled back")
        assert synchronous() == 1  # restored after a rollback too
    finally:
        journal.close()


def test_reopening_applies_nothing_twice(path):
    Journal.open(path).close()
    first = sqlite3.connect(path).execute("SELECT * FROM _sqlite_migrations").fetchall()
    for _ in range(2):
        Journal.open(path).close()
    assert sqlite3.connect(path).execute("SELECT * FROM _sqlite_migrations").fetchall() == first
    assert len(first) >= len(MIGRATIONS)


def test_reopening_keeps_the_rows(path):
    journal = Journal.open(path)
    run = journal.start_run({"workers": 3}, "http://api.test")
    journal.close()
    journal = Journal.open(path)
    try:
        assert journal.last_run() == run
        assert run.state == RunState.RUNNING and run.settings == {"workers": 3} and run.attempts == 1
    finally:
        journal.close()


def test_readonly_journal_reads_beside_a_writer_but_refuses_writes(journal, run_id, path):
    with journal.transaction():
        journal.record_page(run_id, 1, [1, 2], total_pages=1)
    reader = Journal.open(path, readonly=True)
    try:
        assert reader.animal_ids(run_id, A.DISCOVERED) == [1, 2]
        with pytest.raises(JournalError) as exc_info:
            reader.start_run({}, "http://api.test")
        assert "readonly" in one_line(exc_info)
    finally:
        reader.close()
    assert journal.last_run().id == run_id


# --- the happy path -----------------------------------------------------------------------


def test_happy_path_from_listing_to_posted(journal, run_id):
    with journal.transaction():
        assert journal.record_page(run_id, 1, [3, 1, 2], total_pages=2) == [3, 1, 2]
        assert journal.record_page(run_id, 2, [2, 4], total_pages=2) == [4]
    assert journal.listed_pages(run_id) == {1, 2}
    assert journal.run(run_id).total_pages == 2
    assert journal.animal_ids(run_id, A.DISCOVERED) == [1, 2, 3, 4]

    with journal.transaction():
        fetch(journal, run_id, 1, 2, 3, 4)
    assert [(r.id, r.transformed) for r in iter_animals(journal, run_id, [A.FETCHED])] == [(i, json.dumps({"id": i})) for i in (1, 2, 3, 4)]

    with journal.transaction():
        batch_id = journal.create_batch(run_id, [3, 1])
    batch = journal.batch(batch_id)
    assert (batch.state, batch.ids, batch.attempts) == (B.PENDING, (3, 1), 0)
    assert journal.batch_records(batch) == [{"id": 3}, {"id": 1}]
    assert journal.animal_ids(run_id, A.FETCHED) == [2, 4]
    bound = dict(journal.db.execute("SELECT id, batch_id FROM animals WHERE state = 'batched'").fetchall())
    assert bound == {1: batch_id, 3: batch_id}

    with journal.transaction():
        send(journal, batch)
    batch = journal.batch(batch_id)
    assert (batch.state, batch.attempts) == (B.SENDING, 1)

    with journal.transaction():
        journal.mark_posted(batch, 201, '{"ok": true}')
    batch = journal.batch(batch_id)
    assert (batch.state, batch.response_status, batch.response_body) == (B.POSTED, 201, '{"ok": true}')
    assert batch.in_doubt_at is None
    assert animal_states(journal, run_id) == {1: "posted", 2: "fetched", 3: "posted", 4: "fetched"}
    assert journal.count_batches(run_id) == {"posted": 1}


def test_record_page_returns_an_id_once_even_on_two_pages_or_twice_on_one(journal, run_id):
    assert journal.record_page(run_id, 1, [5, 6, 5], total_pages=3) == [5, 6]
    assert journal.record_page(run_id, 2, [6, 7], total_pages=3) == [7]
    assert journal.record_page(run_id, 1, [5, 6], total_pages=3) == []  # a page listed again
    pages = dict(journal.db.execute("SELECT id, page FROM animals").fetchall())
    assert pages == {5: 1, 6: 1, 7: 2}  # the first page that listed an animal keeps it


def test_record_page_max_new_caps_and_journals_no_more(journal, run_id):
    assert journal.record_page(run_id, 1, [1, 2], total_pages=2, max_new=3) == [1, 2]
    assert journal.record_page(run_id, 2, [2, 3, 4, 5], total_pages=2, max_new=1) == [3]
    assert journal.animal_ids(run_id, A.DISCOVERED) == [1, 2, 3]
    assert journal.record_page(run_id, 3, [9], total_pages=3, max_new=0) == []
    assert journal.animal_ids(run_id, A.DISCOVERED) == [1, 2, 3]


def test_total_pages_keeps_the_largest_reported(journal, run_id):
    journal.record_page(run_id, 1, [1], total_pages=4)
    journal.record_page(run_id, 2, [2], total_pages=3)
    assert journal.run(run_id).total_pages == 4
    journal.record_page(run_id, 3, [3], total_pages=6)
    assert journal.run(run_id).total_pages == 6


def test_a_page_keeps_its_digest_and_the_items_it_set_aside(journal, run_id):
    assert journal.first_listed_page(run_id) is None
    bad = [{"item": '{"id": 3.7}', "reason": "id 3.7 is float, not an integer"}]
    journal.record_page(run_id, 2, [11], total_pages=2, digest="b2", bad_items=bad)
    journal.record_page(run_id, 1, [1], total_pages=2, digest="a1")
    assert journal.first_listed_page(run_id) == (1, "a1")
    assert journal.bad_listing_items(run_id) == [{"page": 2, **bad[0]}]
    assert journal.animal_ids(run_id, A.DISCOVERED) == [1, 11]


def test_runs_of_one_journal_keep_their_animals_apart(journal, run_id):
    other = journal.start_run({}, "http://api.test").id
    journal.record_page(run_id, 1, [1, 2], total_pages=1)
    assert journal.record_page(other, 1, [1, 2], total_pages=1) == [1, 2]
    fetch(journal, other, 1)
    assert animal_states(journal, run_id) == {1: "discovered", 2: "discovered"}
    assert journal.last_run().id == other


# --- the transition tables ----------------------------------------------------------------


@pytest.mark.parametrize("table, states", [(ANIMAL_TRANSITIONS, A), (BATCH_TRANSITIONS, B)], ids=["animal", "batch"])
def test_transition_table_covers_every_state_and_only_states(table, states):
    assert set(table) == set(states)
    for source, targets in table.items():
        assert targets <= set(states)
        assert source not in targets


@pytest.mark.parametrize(
    "table, start, terminal",
    [
        (ANIMAL_TRANSITIONS, A.DISCOVERED, {A.POSTED, A.SETTLED, A.UNCHANGED}),
        (BATCH_TRANSITIONS, B.PENDING, {B.POSTED, B.FAILED, B.SETTLED}),
    ],
    ids=["animal", "batch"],
)
def test_transition_table_terminals_are_terminal_and_everything_reaches_them(table, start, terminal):
    assert {state for state, targets in table.items() if not targets} == terminal

    def reachable(source):
        seen, todo = {source}, [source]
        while todo:
            for target in table[todo.pop()]:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    assert reachable(start) == set(table)  # no dead state
    for state in table:
        assert reachable(state) & terminal  # no trap without an end


def test_transition_tables_say_what_the_design_says():
    assert ANIMAL_TRANSITIONS[A.FETCHED] == {A.BATCHED}  # a fetched animal only leaves in a batch
    assert A.DISCOVERED in ANIMAL_TRANSITIONS[A.QUARANTINED] and A.DISCOVERED in ANIMAL_TRANSITIONS[A.FAILED]
    # fetched: a refused batch is split; settled: a person judged its in-doubt batch delivered
    assert ANIMAL_TRANSITIONS[A.BATCHED] == {A.POSTED, A.FAILED, A.FETCHED, A.SETTLED}
    assert BATCH_TRANSITIONS[B.PENDING] == {B.WITHHELD}  # nothing is answered without being sent
    # a body is released only from withheld, and only its release (or a kill after it) makes a send doubtful
    assert {source for source, targets in BATCH_TRANSITIONS.items() if B.SENDING in targets} == {B.WITHHELD}
    assert B.PENDING in BATCH_TRANSITIONS[B.WITHHELD]  # killed or never received before release: provably unsent
    # in doubt ends only by a re-send, or by a person's decision: delivered (settled), or re-send (pending)
    assert BATCH_TRANSITIONS[B.IN_DOUBT] == {B.WITHHELD, B.SETTLED, B.PENDING}
    assert {source for source, targets in BATCH_TRANSITIONS.items() if B.SETTLED in targets} == {B.IN_DOUBT}
    assert {source for source, targets in ANIMAL_TRANSITIONS.items() if A.SETTLED in targets} == {A.BATCHED}
    # unchanged (--incremental): decided when its detail is fetched, never after it is batched
    assert {source for source, targets in ANIMAL_TRANSITIONS.items() if A.UNCHANGED in targets} == {A.DISCOVERED}
    assert B.PENDING in BATCH_TRANSITIONS[B.SENDING]  # never reached the API


def animal_in(journal, run_id, state, animal_id=1):
    """Drive one animal to `state` through the public steps only."""
    with journal.transaction():
        journal.record_page(run_id, 1, [animal_id], total_pages=1)
        if state is A.QUARANTINED:
            journal.record_quarantined(run_id, animal_id, b"\xff", "not JSON", attempts=1)
        elif state is A.FAILED:
            journal.record_fetch_failed(run_id, animal_id, "HTTP 404", attempts=1)
        elif state is A.UNCHANGED:
            journal.record_unchanged(run_id, animal_id, "raw", "{}", 1, Delivery(run_id, 1, "{}"))
        elif state is not A.DISCOVERED:
            fetch(journal, run_id, animal_id)
            if state is not A.FETCHED:
                batch = journal.batch(journal.create_batch(run_id, [animal_id]))
                if state is A.POSTED:
                    send(journal, batch)
                    journal.mark_posted(journal.batch(batch.id), 200, "")
                elif state is A.SETTLED:
                    send(journal, batch)
                    journal.mark_in_doubt(journal.batch(batch.id), "read timeout")
                    journal.record_settlement(journal.batch(batch.id), Decision.DELIVERED, "seen downstream", "tester")


def batch_in(journal, run_id, state, *ids):
    """Drive one batch (of animal 1 unless told) to `state` through the public steps only."""
    batch = batch_of(journal, run_id, *(ids or (1,)))
    with journal.transaction():
        if state is B.WITHHELD:
            journal.mark_withheld(batch)
        elif state is not B.PENDING:
            send(journal, batch)
            batch = journal.batch(batch.id)
        if state is B.POSTED:
            journal.mark_posted(batch, 200, "")
        elif state is B.FAILED:
            journal.mark_failed(batch, 422, "no", "HTTP 422")
        elif state in (B.IN_DOUBT, B.SETTLED):
            journal.mark_in_doubt(batch, "read timeout")
            if state is B.SETTLED:
                journal.record_settlement(journal.batch(batch.id), Decision.DELIVERED, "seen downstream", "tester")
    return journal.batch(batch.id)


# The legal steps, written out by hand (the state diagrams in docs/how-it-works.md), not read from the tables the
# code reads: a step added to or dropped from a table by mistake fails here.
LEGAL_ANIMAL_STEPS = {
    ("discovered", "fetched"), ("discovered", "quarantined"), ("discovered", "failed"), ("discovered", "unchanged"),
    ("quarantined", "discovered"), ("failed", "discovered"), ("fetched", "batched"),
    ("batched", "posted"), ("batched", "failed"), ("batched", "fetched"), ("batched", "settled"),
}
LEGAL_BATCH_STEPS = {
    ("pending", "withheld"),
    ("withheld", "sending"), ("withheld", "pending"), ("withheld", "failed"), ("withheld", "in_doubt"), ("withheld", "posted"),
    ("sending", "posted"), ("sending", "failed"), ("sending", "in_doubt"), ("sending", "pending"),
    ("in_doubt", "withheld"), ("in_doubt", "settled"), ("in_doubt", "pending"),
}
TRANSITION_CHECKS = [
    *(pytest.param(LEGAL_ANIMAL_STEPS, check_animal_transition, "animal", s, t, id=f"animal-{s}-{t}") for s, t in product(A, A)),
    *(pytest.param(LEGAL_BATCH_STEPS, check_batch_transition, "batch", s, t, id=f"batch-{s}-{t}") for s, t in product(B, B)),
]


def test_the_transition_tables_are_the_legal_steps_written_out() -> None:
    assert {(s.value, t.value) for s, targets in ANIMAL_TRANSITIONS.items() for t in targets} == LEGAL_ANIMAL_STEPS
    assert {(s.value, t.value) for s, targets in BATCH_TRANSITIONS.items() for t in targets} == LEGAL_BATCH_STEPS


@pytest.mark.parametrize("legal, check, kind, source, target", TRANSITION_CHECKS)
def test_the_transition_checks_follow_the_tables_exactly(legal, check, kind, source, target):
    """What the journal asks before every animal or batch write: a legal step passes, any other is refused."""
    if (source.value, target.value) in legal:
        check(source, target)
    else:
        with pytest.raises(IllegalTransition, match=f"{kind} {source} -> {target}"):
            check(source, target)


# The public writes that move one animal, the one state each takes it from, and where each takes it.
ANIMAL_WRITES = {
    "record_fetched": (A.DISCOVERED, A.FETCHED, lambda journal, run_id: journal.record_fetched(run_id, 1, "raw", "{}", attempts=1)),
    "record_quarantined": (
        A.DISCOVERED, A.QUARANTINED, lambda journal, run_id: journal.record_quarantined(run_id, 1, "raw", "bad", attempts=1)
    ),
    "record_fetch_failed": (A.DISCOVERED, A.FAILED, lambda journal, run_id: journal.record_fetch_failed(run_id, 1, "HTTP 404", attempts=1)),
    "record_unchanged": (
        A.DISCOVERED, A.UNCHANGED, lambda journal, run_id: journal.record_unchanged(run_id, 1, "raw", "{}", 1, Delivery(run_id, 1, "{}"))
    ),
    "create_batch": (A.FETCHED, A.BATCHED, lambda journal, run_id: journal.create_batch(run_id, [1])),
}


@pytest.mark.parametrize("state, write", list(product(A, ANIMAL_WRITES)), ids=str)
def test_animal_writes_land_only_from_their_state(journal, run_id, state, write):
    source, target, apply = ANIMAL_WRITES[write]
    assert target in ANIMAL_TRANSITIONS[source]  # each write is one edge of the table
    animal_in(journal, run_id, state)
    before = snapshot(journal)
    if state is source:
        apply(journal, run_id)
        assert animal_states(journal, run_id) == {1: target}
    else:
        with pytest.raises(IllegalTransition):
            apply(journal, run_id)
        assert snapshot(journal) == before


# The public writes that move a batch from whatever state it is in now, and where each takes it.
BATCH_WRITES = {
    "mark_withheld": (B.WITHHELD, lambda journal, batch: journal.mark_withheld(batch)),
    "mark_sending": (B.SENDING, lambda journal, batch: journal.mark_sending(batch)),
    "mark_posted": (B.POSTED, lambda journal, batch: journal.mark_posted(batch, 200, "")),
    "mark_failed": (B.FAILED, lambda journal, batch: journal.mark_failed(batch, 422, "no", "HTTP 422")),
    "mark_refused_for_split": (B.FAILED, lambda journal, batch: journal.mark_refused_for_split(batch, 422, "no", "HTTP 422")),
    "mark_in_doubt": (B.IN_DOUBT, lambda journal, batch: journal.mark_in_doubt(batch, "read timeout")),
    "unsend": (B.PENDING, lambda journal, batch: journal.unsend(batch, "connection refused")),
}


@pytest.mark.parametrize("source, write", list(product(B, BATCH_WRITES)), ids=str)
def test_batch_writes_follow_the_table_from_every_state(journal, run_id, source, write):
    """Each write takes the batch from the state the journal holds, so only the table stands between it and an
    illegal move: a legal one lands, an illegal one is refused and changes nothing."""
    target, apply = BATCH_WRITES[write]
    batch = batch_in(journal, run_id, source)
    before = snapshot(journal)
    if target in BATCH_TRANSITIONS[source]:
        apply(journal, batch)
        assert journal.batch(batch.id).state == target
    else:
        with pytest.raises(IllegalTransition, match=f"batch {source} -> {target}"):
            apply(journal, batch)
        assert snapshot(journal) == before


# --- illegal steps through the public methods ---------------------------------------------


def test_record_fetched_twice_is_illegal_and_keeps_the_first(journal, run_id):
    journal.record_page(run_id, 1, [1], total_pages=1)
    journal.record_fetched(run_id, 1, "raw-1", "{}", attempts=2)
    before = snapshot(journal)
    with pytest.raises(IllegalTransition):
        journal.record_fetched(run_id, 1, "raw-2", "{}", attempts=1)
    with pytest.raises(IllegalTransition):
        journal.record_quarantined(run_id, 1, "raw-3", "bad", attempts=1)
    assert snapshot(journal) == before


def test_record_fetched_of_an_unlisted_animal_is_illegal(journal, run_id):
    before = snapshot(journal)
    with pytest.raises(IllegalTransition):
        journal.record_fetched(run_id, 99, "raw", "{}", attempts=1)
    assert snapshot(journal) == before


@pytest.mark.parametrize("ids", [[1, 2], [1, 99], [2]], ids=["one-not-fetched", "one-unknown", "discovered"])
def test_create_batch_of_animals_not_fetched_is_illegal_and_leaves_no_batch(journal, run_id, ids):
    journal.record_page(run_id, 1, [1, 2], total_pages=1)
    fetch(journal, run_id, 1)
    before = snapshot(journal)
    with pytest.raises(IllegalTransition), journal.transaction():
        journal.create_batch(run_id, ids)
    assert snapshot(journal) == before
    assert journal.count_batches(run_id) == {}


def test_create_batch_twice_with_one_animal_is_illegal(journal, run_id):
    batch_of(journal, run_id, 1)
    before = snapshot(journal)
    with pytest.raises(IllegalTransition), journal.transaction():
        journal.create_batch(run_id, [1])
    assert snapshot(journal) == before


ANSWERS = {
    "mark_posted": lambda journal, batch: journal.mark_posted(batch, 200, "ok"),
    "mark_failed": lambda journal, batch: journal.mark_failed(batch, 422, "no", "HTTP 422"),
    "mark_in_doubt": lambda journal, batch: journal.mark_in_doubt(batch, "read timeout"),
    "unsend": lambda journal, batch: journal.unsend(batch, "refused"),
}
STEPS = {
    "mark_withheld": lambda journal, batch: journal.mark_withheld(batch),
    "mark_sending": lambda journal, batch: journal.mark_sending(batch),
    **ANSWERS,
}


@pytest.mark.parametrize("answer", ANSWERS)
def test_a_pending_batch_cannot_be_answered(journal, run_id, answer):
    batch = batch_of(journal, run_id, 1, 2)
    before = snapshot(journal)
    with pytest.raises(IllegalTransition), journal.transaction():
        ANSWERS[answer](journal, batch)
    assert snapshot(journal) == before


@pytest.mark.parametrize("state", [B.POSTED, B.FAILED, B.SETTLED])
@pytest.mark.parametrize("step", STEPS)
def test_a_finished_batch_cannot_go_anywhere(journal, run_id, state, step):
    batch = batch_in(journal, run_id, state)
    before = snapshot(journal)
    with pytest.raises(IllegalTransition), journal.transaction():
        STEPS[step](journal, batch)
    assert snapshot(journal) == before


def test_mark_withheld_from_a_stale_row_is_illegal(journal, run_id):
    stale = batch_of(journal, run_id, 1)  # says pending
    with journal.transaction():
        send(journal, stale)
        journal.mark_posted(journal.batch(stale.id), 200, "")
    before = snapshot(journal)
    with pytest.raises(IllegalTransition), journal.transaction():
        journal.mark_withheld(stale)
    assert snapshot(journal) == before
    assert journal.batch(stale.id).attempts == 1


@pytest.mark.parametrize("step", ["create_batch", "mark_sending"])
def test_an_illegal_step_outside_a_transaction_changes_nothing(journal, run_id, step):
    batch = batch_in(journal, run_id, B.POSTED)
    journal.record_page(run_id, 2, [2, 3], total_pages=2)
    fetch(journal, run_id, 2)
    before = snapshot(journal)
    with pytest.raises(IllegalTransition):
        if step == "create_batch":
            journal.create_batch(run_id, [2, 3])  # 3 is not fetched
        else:
            journal.mark_sending(batch)  # posted is terminal
    assert snapshot(journal) == before


# --- failure, retry, doubt ----------------------------------------------------------------


def test_mark_failed_fails_the_animals_with_the_answer_kept(journal, run_id):
    batch = sending(journal, run_id, 1, 2)
    with journal.transaction():
        journal.mark_failed(batch, 422, '{"error": "bad name"}', "HTTP 422: bad name")
    failed = journal.batch(batch.id)
    assert (failed.state, failed.response_status, failed.response_body, failed.last_error) == (
        B.FAILED, 422, '{"error": "bad name"}', "HTTP 422: bad name",
    )
    rows = list(journal.db.query("SELECT id, state, last_error, batch_id FROM animals ORDER BY id"))
    assert rows == [
        {"id": 1, "state": "failed", "last_error": "HTTP 422: bad name", "batch_id": batch.id},
        {"id": 2, "state": "failed", "last_error": "HTTP 422: bad name", "batch_id": batch.id},
    ]


def test_mark_refused_for_split_frees_the_animals_to_be_batched_again(journal, run_id):
    batch = sending(journal, run_id, 1, 2, 3)
    with journal.transaction():
        journal.mark_refused_for_split(batch, 422, '{"error": "id 2"}', "HTTP 422")
    refused = journal.batch(batch.id)
    assert (refused.state, refused.response_status, refused.response_body) == (B.FAILED, 422, '{"error": "id 2"}')
    assert refused.last_error.startswith("HTTP 422") and "split" in refused.last_error
    assert journal.animal_ids(run_id, A.FETCHED) == [1, 2, 3]
    assert journal.db.execute("SELECT count(*) FROM animals WHERE batch_id IS NOT NULL").fetchone()[0] == 0
    with journal.transaction():
        halves = [journal.create_batch(run_id, [1]), journal.create_batch(run_id, [2, 3])]
    assert [journal.batch(batch_id).ids for batch_id in halves] == [(1,), (2, 3)]
    with pytest.raises(IllegalTransition), journal.transaction():
        journal.mark_refused_for_split(journal.batch(halves[0]), 422, "", "HTTP 422")  # pending: never answered


def test_retry_exceptions_sends_quarantined_and_failed_back_to_discovered(journal, run_id):
    batch = sending(journal, run_id, 1, 2)
    with journal.transaction():
        journal.mark_failed(batch, 400, "", "HTTP 400")
        journal.record_page(run_id, 2, [3, 4, 5, 6], total_pages=2)
        journal.record_quarantined(run_id, 3, b"{", "not JSON", attempts=1)
        journal.record_fetch_failed(run_id, 4, "HTTP 404", attempts=3)
        fetch(journal, run_id, 5)
    with journal.transaction():
        assert journal.retry_exceptions(run_id) == 4
    assert animal_states(journal, run_id) == {1: "discovered", 2: "discovered", 3: "discovered", 4: "discovered", 5: "fetched", 6: "discovered"}
    assert journal.db.execute("SELECT count(*) FROM animals WHERE batch_id IS NOT NULL").fetchone()[0] == 0
    with journal.transaction():
        assert journal.retry_exceptions(run_id) == 0
        fetch(journal, run_id, 1)  # a retried animal is fetched like a new one
    assert journal.batch(batch.id).state == B.FAILED  # the batch's history stays


def test_in_doubt_at_is_set_once_and_never_cleared(journal, run_id):
    batch = sending(journal, run_id, 1, 2)
    with journal.transaction():
        journal.mark_in_doubt(batch, "read timeout")
    doubted = journal.batch(batch.id)
    assert doubted.state == B.IN_DOUBT and doubted.last_error == "read timeout"
    first = doubted.in_doubt_at
    assert first is not None
    assert animal_states(journal, run_id) == {1: "batched", 2: "batched"}  # still bound to their batch

    time.sleep(0.005)  # timestamps have milliseconds: a second mark would differ
    with journal.transaction():
        send(journal, doubted)
    resent = journal.batch(batch.id)
    assert (resent.state, resent.attempts, resent.in_doubt_at) == (B.SENDING, 2, first)
    with journal.transaction():
        journal.mark_in_doubt(resent, "dropped again")
        send(journal, journal.batch(batch.id))
        journal.mark_posted(journal.batch(batch.id), 200, "ok")
    posted = journal.batch(batch.id)
    assert (posted.state, posted.attempts, posted.in_doubt_at) == (B.POSTED, 3, first)
    assert animal_states(journal, run_id) == {1: "posted", 2: "posted"}


def test_a_batch_is_not_sent_when_the_journal_has_no_room_for_its_answer(journal, run_id, path):
    """On a full disk the small `withheld` commit may still fit where the answer will not: the room is measured."""
    batch = batch_of(journal, run_id, 1, 2)
    wal = path.with_name(path.name + "-wal").stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (wal + 8 * 1024, hard))  # room for a page or two, not an answer
    try:
        with pytest.raises(NoRoomForAnswer) as exc_info, journal.transaction(durable=True):
            journal.mark_withheld(batch)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert f"the answer to batch {batch.id} (2 animals) needs about" in one_line(exc_info)
    assert isinstance(exc_info.value, JournalError) and exc_info.value.room <= 8 * 1024
    assert journal.batch(batch.id).state is B.PENDING and journal.batch(batch.id).attempts == 0
    journal.mark_withheld(batch)  # room again
    assert journal.batch(batch.id).state is B.WITHHELD


def test_sending_to_in_doubt_converts_every_sending_batch_of_the_run(journal, run_id):
    pending = batch_of(journal, run_id, 1)
    first = sending(journal, run_id, 2)
    second = sending(journal, run_id, 3)
    posted = batch_in(journal, run_id, B.POSTED, 4)
    other_run = journal.start_run({}, "http://api.test").id
    foreign = sending(journal, other_run, 1)
    with journal.transaction():
        assert journal.sending_to_in_doubt(run_id) == [first.id, second.id]
    states = {batch.id: journal.batch(batch.id).state for batch in (pending, first, second, posted, foreign)}
    assert states == {pending.id: B.PENDING, first.id: B.IN_DOUBT, second.id: B.IN_DOUBT, posted.id: B.POSTED, foreign.id: B.SENDING}
    assert journal.batch(first.id).in_doubt_at is not None
    assert "in flight" in journal.batch(first.id).last_error
    with journal.transaction():
        assert journal.sending_to_in_doubt(run_id) == []


def test_unsend_puts_a_batch_that_never_left_back_to_pending(journal, run_id):
    batch = sending(journal, run_id, 1)
    with journal.transaction():
        journal.unsend(batch, "connection refused")
    unsent = journal.batch(batch.id)
    assert (unsent.state, unsent.last_error, unsent.attempts, unsent.in_doubt_at) == (B.PENDING, "connection refused", 1, None)
    assert animal_states(journal, run_id) == {1: "batched"}
    with journal.transaction():
        send(journal, unsent)
    assert journal.batch(batch.id).attempts == 2


# --- transactions -------------------------------------------------------------------------


def test_a_transaction_that_raises_rolls_everything_back(journal, run_id):
    journal.record_page(run_id, 1, [1, 2], total_pages=1)
    fetch(journal, run_id, 1, 2)
    before = snapshot(journal)
    with pytest.raises(RuntimeError, match="boom"), journal.transaction():
        batch_id = journal.create_batch(run_id, [1, 2])
        journal.add_counters(run_id, {"batches": 1})
        raise RuntimeError("boom")
    assert snapshot(journal) == before
    with pytest.raises(JournalError, match="no batch"):
        journal.batch(batch_id)


def test_a_nested_transaction_rolls_back_alone(journal, run_id):
    with journal.transaction():
        journal.record_page(run_id, 1, [1], total_pages=1)
        with pytest.raises(RuntimeError), journal.transaction():
            journal.record_page(run_id, 2, [2], total_pages=2)
            raise RuntimeError
    assert journal.animal_ids(run_id, A.DISCOVERED) == [1]


def test_an_sqlite_error_in_a_transaction_is_a_journal_error_and_rolls_back(journal, run_id):
    before = snapshot(journal)
    with pytest.raises(JournalError) as exc_info, journal.transaction():
        journal.record_page(run_id, 1, [1], total_pages=1)
        journal.db.execute("INSERT INTO no_such_table VALUES (1)")
    message = one_line(exc_info)
    assert "no_such_table" in message and str(journal.path) in message
    assert exc_info.value.__cause__ is None and exc_info.value.__suppress_context__
    assert snapshot(journal) == before


def test_a_step_commits_when_its_transaction_ends(journal, run_id, path):
    reader = Journal.open(path, readonly=True)
    try:
        with journal.transaction():
            journal.record_page(run_id, 1, [1, 2], total_pages=1)
            assert reader.animal_ids(run_id, A.DISCOVERED) == []
        assert reader.animal_ids(run_id, A.DISCOVERED) == [1, 2]
    finally:
        reader.close()


# --- durability across processes ----------------------------------------------------------


def test_committed_rows_survive_kill_9_and_uncommitted_ones_do_not(path):
    proc = child(
        """
        import sys
        from animal_sync.journal import Journal
        journal = Journal.open(sys.argv[1])
        run = journal.start_run({}, "http://api.test")
        with journal.transaction():
            journal.record_page(run.id, 1, [1, 2, 3], total_pages=1)
            journal.add_counters(run.id, {"pages": 1})
        journal.db.conn.execute("BEGIN")
        journal.record_page(run.id, 2, [4, 5], total_pages=2)
        print("committed", flush=True)
        sys.stdin.read()
        """,
        str(path),
    )
    wait_for(proc, "committed")
    kill_9(proc)
    journal = Journal.open(path)
    try:
        run = journal.last_run()
        assert run.state == RunState.RUNNING
        assert journal.animal_ids(run.id, A.DISCOVERED) == [1, 2, 3]
        assert journal.listed_pages(run.id) == {1}
        assert journal.run(run.id).total_pages == 1
        assert journal.counters(run.id) == {"pages": 1}
    finally:
        journal.close()


# --- faults: each one line ----------------------------------------------------------------


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(path):
    junk = random.Random(7).randbytes(8192)
    path.write_bytes(junk)
    for readonly in (False, True):
        with pytest.raises(JournalError) as exc_info:
            Journal.open(path, readonly=readonly)
        assert "not a usable animal-sync journal" in one_line(exc_info)
    assert path.read_bytes() == junk


def test_an_sqlite_file_of_something_else_is_not_a_journal(path):
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    for readonly in (False, True):
        with pytest.raises(JournalError) as exc_info:
            Journal.open(path, readonly=readonly)
        assert "not an animal-sync journal" in one_line(exc_info)
    tables = [row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables == ["people"]  # nothing was migrated into it


def test_a_journal_from_a_newer_animal_sync_is_refused(path):
    Journal.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, ?, ?)",
            ["animal_sync", "0002_from_the_future", "2099-01-01"],
        )
    for readonly in (False, True):
        with pytest.raises(JournalError) as exc_info:
            Journal.open(path, readonly=readonly)
        message = one_line(exc_info)
        assert "newer animal-sync" in message and "0002_from_the_future" in message


def test_migrations_of_another_set_do_not_make_a_journal_newer(path):
    Journal.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('someone_else', '0009_x', '')"
        )
    for readonly in (True, False):  # neither refuses it as newer, and both can read it
        with Journal.open(path, readonly=readonly) as journal:
            assert journal.last_run() is None
    with sqlite3.connect(path) as conn:  # and the other set's record is left as it was
        assert conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = 'someone_else'").fetchall() == [("0009_x",)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a 0o444 file: os.access says writable, so the check cannot fire")
def test_a_read_only_file_cannot_be_opened_for_writing(path):
    Journal.open(path).close()
    path.chmod(0o444)
    with pytest.raises(JournalError) as exc_info:
        Journal.open(path)
    assert "read-only" in one_line(exc_info)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may create files in a 0o555 directory")
def test_a_journal_cannot_be_created_in_a_read_only_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(JournalError) as exc_info:
        Journal.open(locked / "journal.db")
    assert "not writable" in one_line(exc_info)


def test_a_read_only_file_can_still_be_opened_readonly(path):
    journal = Journal.open(path)
    run_id = journal.start_run({}, "http://api.test").id
    journal.close()
    path.chmod(0o444)
    reader = Journal.open(path, readonly=True)
    try:
        assert reader.last_run().id == run_id
    finally:
        reader.close()


def test_a_directory_that_does_not_exist(tmp_path):
    missing = tmp_path / "nowhere" / "journal.db"
    with pytest.raises(JournalError) as exc_info:
        Journal.open(missing)
    assert "does not exist" in one_line(exc_info)
    assert not missing.parent.exists()


def test_a_directory_is_not_a_journal(tmp_path):
    with pytest.raises(JournalError) as exc_info:
        Journal.open(tmp_path)
    assert "is a directory" in one_line(exc_info)


def test_readonly_on_an_unmigrated_file_is_refused_and_left_alone(path):
    path.touch()  # an empty SQLite database: no schema at all, and a reader may not add one
    with pytest.raises(JournalError) as exc_info:
        Journal.open(path, readonly=True)
    assert isinstance(exc_info.value, JournalEmpty)  # the CLI words what comes next: a run, not a resume
    assert "is empty: it holds no run yet" in one_line(exc_info) and "resume" not in one_line(exc_info)
    assert path.stat().st_size == 0


def test_readonly_on_a_missing_file_creates_nothing(path):
    with pytest.raises(JournalError) as exc_info:
        Journal.open(path, readonly=True)
    assert "no journal" in one_line(exc_info)
    assert not path.exists()


def test_a_missing_run_or_batch_is_a_journal_error(journal):
    with pytest.raises(JournalError, match="no run 7"):
        journal.run(7)
    with pytest.raises(JournalError, match="no batch 7"):
        journal.batch(7)
    assert journal.last_run() is None


# --- the writer's lock --------------------------------------------------------------------


def test_a_second_writer_cannot_open_until_the_first_closes(path):
    first = Journal.open(path, exclusive=True)
    try:
        with pytest.raises(JournalError) as exc_info:
            Journal.open(path, exclusive=True)
        message = one_line(exc_info)
        assert f"journal {path} is in use" in message and f"pid {os.getpid()}" in message
    finally:
        first.close()
    with Journal.open(path, exclusive=True):
        assert path.with_name(path.name + ".lock").read_text().split("\n")[0] == str(os.getpid())


HOLD_THE_JOURNAL = """
    import sys
    from animal_sync.journal import Journal
    journal = Journal.open(sys.argv[1], exclusive=True)
    print("locked", flush=True)
    sys.stdin.read()
    """


def test_a_lock_held_by_another_process_is_refused_until_it_dies(path):
    proc = child(HOLD_THE_JOURNAL, str(path))
    wait_for(proc, "locked")
    try:
        with pytest.raises(JournalError) as exc_info:
            Journal.open(path, exclusive=True)
        assert f"in use by another animal-sync process (pid {proc.pid})" in one_line(exc_info)
        kill_9(proc)  # the kernel drops a dead process's flock: no stale lock to clean up
        Journal.open(path, exclusive=True).close()
    finally:
        if proc.poll() is None:
            kill_9(proc)


def test_deleting_the_pid_file_does_not_let_a_second_writer_in(path):
    """The lock is on the journal file itself; the `.lock` beside it only tells `status` the writer's pid."""
    proc = child(HOLD_THE_JOURNAL, str(path))
    wait_for(proc, "locked")
    pid_file = path.with_name(path.name + ".lock")
    try:
        pid_file.unlink()
        with pytest.raises(JournalError) as exc_info:
            Journal.open(path, exclusive=True)
        assert one_line(exc_info) == f"journal {path} is in use by another animal-sync process (pid unknown)"
        assert not pid_file.exists()  # the refused process leaves no pid of its own behind
    finally:
        kill_9(proc)
    with Journal.open(path, exclusive=True):
        assert pid_file.read_text().split("\n")[0] == str(os.getpid())


def test_a_state_changed_by_another_process_is_one_journal_error_not_a_bug_report(path):
    """Two writers that bypass the lock (library use): the loser of a race gets a JournalError naming the journal."""
    with Journal.open(path, exclusive=False) as first, Journal.open(path, exclusive=False) as second:
        run_id = first.start_run({}, "http://api.test").id
        batch = batch_of(first, run_id, 1, 2)
        first.mark_withheld(batch)
        with pytest.raises(JournalError) as exc_info:
            second.mark_withheld(batch)  # raced: the batch is no longer pending
    message = one_line(exc_info)
    assert message.startswith(f"journal {path}: batch {batch.id} was not pending")
    assert "the journal changed under this process" in message
    assert isinstance(exc_info.value, IllegalTransition)  # still what it is to the state machine


# --- counters and streaming ---------------------------------------------------------------


def test_add_counters_accumulates_per_run_and_skips_zeros(journal, run_id, path):
    other = journal.start_run({}, "http://api.test").id
    with journal.transaction():
        journal.add_counters(run_id, {"http_503": 2, "read_timeout": 1})
        journal.add_counters(other, {"http_503": 10})
    with journal.transaction():
        journal.add_counters(run_id, {"http_503": 3, "connect_error": 0})
    assert journal.counters(run_id) == {"http_503": 5, "read_timeout": 1}
    assert journal.counters(other) == {"http_503": 10}
    journal.close()
    reopened = Journal.open(path)
    try:
        assert reopened.counters(run_id) == {"http_503": 5, "read_timeout": 1}
    finally:
        reopened.close()


def test_add_counters_outside_a_transaction_is_committed(journal, run_id, path):
    journal.add_counters(run_id, {"pages": 1})
    journal.record_page(run_id, 1, [1], total_pages=1)
    journal.close()
    reopened = Journal.open(path)
    try:
        assert reopened.counters(run_id) == {"pages": 1}
        assert reopened.animal_ids(run_id, A.DISCOVERED) == [1]
    finally:
        reopened.close()


@pytest.fixture
def many(journal, run_id):
    """2,500 animals listed in shuffled order over several pages, every third one fetched, plus another run."""
    ids = list(range(1, 2501))
    random.Random(3).shuffle(ids)
    with journal.transaction():
        for page, start in enumerate(range(0, len(ids), 400), start=1):
            journal.record_page(run_id, page, ids[start : start + 400], total_pages=7)
        fetch(journal, run_id, *range(3, 2501, 3))
        other = journal.start_run({}, "http://api.test").id
        journal.record_page(other, 1, [10_000], total_pages=1)
    return run_id


def test_iter_animals_streams_every_row_in_id_order(journal, many):
    rows = iter_animals(journal, many)
    assert isinstance(rows, Iterator)
    ids = [row.id for row in rows]
    assert ids == list(range(1, 2501))


def test_iter_animals_with_a_filter_pages_past_a_thousand(journal, many):
    rows = list(iter_animals(journal, many, [A.FETCHED]))
    assert [row.id for row in rows] == list(range(3, 2501, 3))
    assert {row.state for row in rows} == {A.FETCHED}
    assert rows[0].transformed == json.dumps({"id": 3})


def test_iter_animals_of_several_states_skips_the_others(journal, many):
    rows = list(iter_animals(journal, many, [A.FETCHED, A.DISCOVERED]))
    assert len(rows) == 2500 and not list(iter_animals(journal, many, [A.POSTED]))


# --- a journal that lost committed state (issue 17 item 10) -------------------------------


ENDS_RUNS = """
    import sys
    from animal_sync.journal import Journal, RunState
    journal = Journal.open(sys.argv[1])
    for _ in range(int(sys.argv[2])):
        run = journal.start_run({}, "http://api.test")
        journal.end_run(run.id, RunState.FINISHED, {})  # a durable commit, as a batch's `sending` mark is
    print("committed", flush=True)
    sys.stdin.read()
    """


def test_a_clean_close_checkpoints_and_leaves_nothing_beside_the_journal(path):
    with Journal.open(path) as journal:
        run = journal.start_run({}, "http://api.test")
        journal.end_run(run.id, RunState.FINISHED, {})
        assert path.with_name(path.name + ".lock").read_text().split("\n")[1] == "mark 1"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no -wal, -shm or .lock


def test_a_kill_never_makes_the_journal_look_rolled_back(path):
    proc = child(ENDS_RUNS, str(path), "3")
    wait_for(proc, "committed")
    kill_9(proc)
    assert path.with_name(path.name + ".lock").exists()  # a killed writer leaves its side file: it is how we know
    for readonly in (True, False):
        with Journal.open(path, readonly=readonly) as journal:
            assert journal.last_run().id == 3


def test_a_deleted_wal_then_a_kill_is_caught_by_every_opener(path, capsys):
    """Deleting the -wal under a live writer, then a kill, rolls the journal back to its last checkpoint; the
    mark kept outside the WAL says what it had committed, so no reader or writer reasons from what is left."""
    with Journal.open(path) as journal:  # a first run, checkpointed into the journal file by its clean close
        journal.end_run(journal.start_run({}, "http://api.test").id, RunState.FINISHED, {})
    proc = child(
        """
        import os, sys
        from animal_sync.journal import Journal, RunState
        journal = Journal.open(sys.argv[1])
        run = journal.start_run({}, "http://api.test")
        os.unlink(sys.argv[1] + "-wal")  # the WAL is deleted under the live writer
        for _ in range(4):
            journal.end_run(journal.start_run({}, "http://api.test").id, RunState.FINISHED, {})
        print("committed", flush=True)
        sys.stdin.read()
        """,
        str(path),
    )
    wait_for(proc, "committed")
    kill_9(proc)
    for opener in (lambda: Journal.open(path, readonly=True), lambda: Journal.open(path)):
        with pytest.raises(JournalRolledBack) as exc_info:
            opener().close()
        message = one_line(exc_info)
        assert message.startswith(f"journal {path} lost committed state:") and "records 5 durable commits" in message
        assert "holds 1" in message
    for command in (["status"], ["audit"], ["resume", "--quiet"], ["run", "--quiet", "--base-url", "http://127.0.0.1:9"]):
        assert main([*command, "--journal", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "lost committed state" in err


def test_a_side_file_left_beside_a_deleted_journal_is_not_a_false_alarm(path):
    """Starting over by deleting a killed run's journal is a person's choice: the new journal is not 'rolled back'."""
    proc = child(ENDS_RUNS, str(path), "2")
    wait_for(proc, "committed")
    kill_9(proc)
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    assert path.with_name(path.name + ".lock").exists()
    with Journal.open(path) as journal:
        assert journal.last_run() is None
    assert not path.with_name(path.name + ".lock").exists()
