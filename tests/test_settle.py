"""Settling what the journal cannot prove: a person's decision about in-doubt batches, and the audit's rule for
batches answered 2xx only after a doubt (at least once, until a person settles them).

Journal-level cases build their batches through the Journal API in a real SQLite file; the end-to-end cases
force a lost POST answer on a real simulator on 127.0.0.1 (`Simulator.queue_chaos`) and drive the CLI in-process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from animal_sync.reports import settle as settle_module
from animal_sync.config import Settings
from animal_sync.journal import AnimalState, BatchRow, BatchState, Decision, IllegalTransition, Journal, RunState
from animal_sync.engine.pipeline import RunOutcome, resume_run, start_run
from animal_sync.reports.audit import audit
from animal_sync.cli.render import render_audit
from animal_sync.reports.settle import BlankReason, NoResendHere, NothingInDoubt, NotSettleable, UnknownBatch, current_user, settle
from animal_sync.simulator import Chaos, Simulator
from animal_sync.transform import canonical_json, transform
from conftest import assert_one_line, run_cli, wait_until

A, B = AnimalState, BatchState
REASON = "checked downstream: every id of the batch is there"


def send(journal: Journal, batch: BatchRow) -> None:
    """The two marks of a send: its POST out with the body held back, then the body released."""
    journal.mark_withheld(batch)
    journal.mark_sending(journal.batch(batch.id))


# --------------------------------------------------------------------------- a journal built through its API


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "j.db"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    with Journal.open(path) as opened:
        yield opened


def record(animal_id: int) -> tuple[str, str]:
    raw = json.dumps({"id": animal_id, "name": f"Animal {animal_id}", "born_at": None, "friends": "Dog"})
    return raw, canonical_json(transform(json.loads(raw)))


def build(journal: Journal, *fates: str) -> list[BatchRow]:
    """A finished run with one two-animal batch per fate: posted, in_doubt, resent (posted after doubt), sending
    or pending."""
    run = journal.start_run({}, "http://api.test")
    ids = list(range(1, 2 * len(fates) + 1))
    batches = []
    with journal.transaction():
        journal.record_page(run.id, 1, ids, total_pages=1)
        for animal_id in ids:
            journal.record_fetched(run.id, animal_id, *record(animal_id), attempts=1)
        for index, fate in enumerate(fates):
            batch = journal.batch(journal.create_batch(run.id, ids[2 * index : 2 * index + 2]))
            if fate != "pending":
                send(journal, batch)
                batch = journal.batch(batch.id)
            if fate == "posted":
                journal.mark_posted(batch, 200, '{"message":"Helped 2 find home"}')
            elif fate in ("in_doubt", "resent"):
                journal.mark_in_doubt(batch, "read timeout")
                if fate == "resent":
                    send(journal, journal.batch(batch.id))
                    journal.mark_posted(journal.batch(batch.id), 200, '{"message":"Helped 2 find home"}')
            batches.append(journal.batch(batch.id))
    journal.end_run(run.id, RunState.FINISHED, {"message": "built by the test"})
    return batches


def rows(journal: Journal) -> dict[str, list[dict[str, Any]]]:
    return {table: list(journal.db.query(f"SELECT * FROM {table} ORDER BY rowid")) for table in ("batches", "animals", "settlements")}


def test_delivered_settles_an_in_doubt_batch_and_its_animals_with_who_when_and_why(journal: Journal) -> None:
    posted, doubted = build(journal, "posted", "in_doubt")
    assert not audit(journal).ok

    [row] = settle(journal, Decision.DELIVERED, f"  {REASON}\n", [doubted.id], user="alice")

    assert (row.batch_id, row.decision, row.reason, row.user, row.attempts) == (doubted.id, "delivered", REASON, "alice", 1)
    assert row.settled_at.endswith("Z") and "T" in row.settled_at  # the journal's own UTC form
    assert journal.batch(doubted.id).state is B.SETTLED
    assert journal.animal_ids(doubted.run_id, A.SETTLED) == list(doubted.ids)
    report = audit(journal)
    assert report.ok and report.exception_counts == {} and report.settled_animals == 2
    assert report.to_json()["settled"] == [{
        "batch_id": doubted.id, "decision": "delivered", "reason": REASON, "user": "alice",
        "settled_at": row.settled_at, "animals": 2, "batch_state": "settled",
    }]
    text = render_audit(report)
    assert f"batch {doubted.id} (2 animals) settled as delivered by a person (alice, {row.settled_at}): {REASON}" in text
    assert text.endswith("OK: every discovered animal was posted exactly once, except 1 batch settled by a person (listed above)")


def test_resend_puts_an_in_doubt_batch_back_to_pending_and_keeps_its_doubt(journal: Journal) -> None:
    _, doubted = build(journal, "posted", "in_doubt")

    settle(journal, Decision.RESEND, REASON, [doubted.id], user="bob")

    queued = journal.batch(doubted.id)
    assert (queued.state, queued.in_doubt_at, queued.attempts) == (B.PENDING, doubted.in_doubt_at, 1)
    assert journal.animal_ids(doubted.run_id, A.BATCHED) == list(doubted.ids)  # still bound to it, to go out again
    report = audit(journal)
    assert not report.ok and set(report.exception_counts) == {"missing"}  # not delivered until a resume sends it
    assert [item.batch_state for item in report.settled] == ["pending"]
    assert "settled for re-send by a person (bob, " in render_audit(report)
    assert "queued for the next `animal-sync resume`" in render_audit(report)


def test_a_batch_posted_after_doubt_is_at_least_once_until_a_person_accepts_it(journal: Journal) -> None:
    posted, resent = build(journal, "posted", "resent")
    report = audit(journal)
    assert not report.ok and report.exception_counts == {"at_least_once": 1}
    assert report.exceptions["at_least_once"][0] | {"in_doubt_at": None} == {
        "batch_id": resent.id, "animals": 2, "attempts": 2, "in_doubt_at": None,
        "reason": "re-sent after its outcome was unknown, then answered 2xx",
    }
    assert "exactly once" not in render_audit(report) and render_audit(report).endswith("NOT OK")
    with pytest.raises(NotSettleable, match="only a judgement that it was delivered"):
        settle(journal, Decision.RESEND, REASON, [resent.id])

    settle(journal, Decision.DELIVERED, REASON, [resent.id], user="carol")

    assert journal.batch(resent.id).state is B.POSTED  # the settlement is the person's acceptance; nothing moves
    report = audit(journal)
    assert report.ok and [item.batch_id for item in report.settled] == [resent.id]
    with pytest.raises(NotSettleable, match="already settled \\(delivered\\) by carol"):
        settle(journal, Decision.DELIVERED, REASON, [resent.id])


def test_a_re_send_decision_covers_one_doubt_only(journal: Journal) -> None:
    """Re-sent as asked and answered 2xx: settled. In doubt again and re-sent without a person: at least once."""
    [doubted] = build(journal, "in_doubt")
    settle(journal, Decision.RESEND, REASON, [doubted.id], user="dave")
    with journal.transaction():
        send(journal, journal.batch(doubted.id))
        journal.mark_posted(journal.batch(doubted.id), 200, "ok")
    assert audit(journal).ok and audit(journal).settled[0].batch_state == "posted"

    [again] = build(journal, "in_doubt")  # a second run: settle it, then lose the re-send's answer too
    settle(journal, Decision.RESEND, REASON, [again.id], user="dave")
    with journal.transaction():
        send(journal, journal.batch(again.id))
        journal.mark_in_doubt(journal.batch(again.id), "read timeout")
        send(journal, journal.batch(again.id))
        journal.mark_posted(journal.batch(again.id), 200, "ok")
    report = audit(journal)
    assert report.exception_counts == {"at_least_once": 1} and report.settled == ()


def test_every_batch_is_checked_before_any_is_settled(journal: Journal) -> None:
    posted, doubted, pending, sending = build(journal, "posted", "in_doubt", "pending", "sending")
    before = rows(journal)
    for ids, error, says in [
        ([doubted.id, posted.id], NotSettleable, f"batch {posted.id} cannot be settled (delivered): it is posted, not in doubt"),
        ([doubted.id, pending.id], NotSettleable, "it is pending, not in doubt"),
        ([sending.id, doubted.id], NotSettleable, "a resume names it in doubt first"),
        ([doubted.id, 99], UnknownBatch, "run 1 has no batch 99"),
    ]:
        with pytest.raises(error, match=says.replace("(", "\\(").replace(")", "\\)")):
            settle(journal, Decision.DELIVERED, REASON, ids)
        assert rows(journal) == before
    with pytest.raises(BlankReason):
        settle(journal, Decision.DELIVERED, " \n\t", [doubted.id])
    assert rows(journal) == before


def test_batches_of_another_run_are_unknown_unless_that_run_is_named(journal: Journal) -> None:
    [first] = build(journal, "in_doubt")
    build(journal, "posted")
    with pytest.raises(UnknownBatch) as caught:
        settle(journal, Decision.DELIVERED, REASON, [first.id])
    assert (caught.value.run_id, caught.value.batch_id) == (2, first.id)
    with pytest.raises(NothingInDoubt):
        settle(journal, Decision.DELIVERED, REASON)
    [row] = settle(journal, Decision.DELIVERED, REASON, run_id=1)  # every in-doubt batch of run 1
    assert (row.run_id, row.batch_id) == (1, first.id)


def test_the_state_machine_refuses_a_settlement_of_a_batch_never_in_doubt(journal: Journal) -> None:
    posted, pending = build(journal, "posted", "pending")
    before = rows(journal)
    for batch, decision in [(posted, Decision.DELIVERED), (posted, Decision.RESEND), (pending, Decision.DELIVERED)]:
        with pytest.raises(IllegalTransition):
            journal.record_settlement(batch, decision, REASON, "eve")
        assert rows(journal) == before


def test_the_user_falls_back_to_the_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    def nameless() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(settle_module.getpass, "getuser", nameless)
    assert current_user() == str(settle_module.os.getuid())


# --------------------------------------------------------------------------- the CLI's words


@pytest.fixture
def doubted_journal(path: Path) -> tuple[Path, list[BatchRow]]:
    with Journal.open(path) as opened:
        return path, build(opened, "posted", "in_doubt", "in_doubt")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["2", "--delivered"], "--reason is required and must not be blank"),
        (["2", "--delivered", "--reason", "   "], "--reason is required and must not be blank"),
        (["2", "--reason", REASON], "pass exactly one of --delivered and --resend"),
        (["2", "--delivered", "--resend", "--reason", REASON], "pass exactly one of --delivered and --resend"),
        (["--delivered", "--reason", REASON], "name the batches to settle, or pass --all-in-doubt (not both)"),
        (["2", "--all-in-doubt", "--delivered", "--reason", REASON], "name the batches to settle, or pass --all-in-doubt"),
        (["99", "--delivered", "--reason", REASON], "run 1 has no batch 99"),
        (["1", "--resend", "--reason", REASON], "batch 1 cannot be settled (resend): it is posted, not in doubt"),
        (["2", "--delivered", "--reason", REASON, "--run", "7"], "has no run 7"),
        (["two", "--delivered", "--reason", REASON], "Invalid value for 'BATCH_ID'"),
    ],
)
def test_settle_errors_are_one_line_exit_2_and_change_nothing(capsys, doubted_journal, args: list[str], says: str) -> None:
    path, _ = doubted_journal
    before = path.read_bytes()
    code, out, err = run_cli(capsys, "settle", "--journal", str(path), *args)
    assert (code, out) == (2, "")
    assert_one_line(err, says)
    with Journal.open(path, readonly=True) as opened:
        assert list(opened.db.query("SELECT * FROM settlements")) == [] and path.read_bytes() == before


def test_settle_of_a_missing_journal_creates_none(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "settle", "1", "--delivered", "--reason", REASON, "--journal", str(tmp_path / "absent.db"))
    assert code == 2
    assert_one_line(err, "no journal at")
    assert list(tmp_path.iterdir()) == []


def test_settle_is_refused_while_a_writer_holds_the_journal(capsys, doubted_journal) -> None:
    path, _ = doubted_journal
    with Journal.open(path, exclusive=True):  # as a live `run` or `resume` holds it
        code, _, err = run_cli(capsys, "settle", "--all-in-doubt", "--delivered", "--reason", REASON, "--journal", str(path))
    assert code == 2
    assert_one_line(err, "is in use by another animal-sync process")
    code, _, err = run_cli(capsys, "settle", "--all-in-doubt", "--delivered", "--reason", REASON, "--journal", str(path))
    assert code == 0, err


def test_settle_all_in_doubt_then_audit_exits_0_and_lists_them(capsys, doubted_journal) -> None:
    path, batches = doubted_journal
    code, _, _ = run_cli(capsys, "audit", "--journal", str(path))
    assert code == 1

    code, out, err = run_cli(capsys, "settle", "--all-in-doubt", "--delivered", "--reason", REASON, "--journal", str(path))

    assert code == 0, err
    assert [line.split(" (")[0] for line in out.splitlines()] == [
        "batch 2 of run 1 settled as delivered", "batch 3 of run 1 settled as delivered"
    ]
    code, out, _ = run_cli(capsys, "audit", "--journal", str(path))
    assert code == 0 and "except 2 batches settled by a person (listed above)" in out
    assert out.count(f"settled as delivered by a person ({current_user()}, ") == 2 and out.count(REASON) == 2
    code, out, _ = run_cli(capsys, "audit", "--journal", str(path), "--json")
    report = json.loads(out)
    assert code == 0 and [item["batch_id"] for item in report["settled"]] == [2, 3]
    assert set(report["settled"][0]) == {"batch_id", "decision", "reason", "user", "settled_at", "animals", "batch_state"}
    code, out, _ = run_cli(capsys, "status", "--journal", str(path), "--json")
    figures = json.loads(out)
    assert [item["batch_id"] for item in figures["settled"]] == [2, 3]
    assert figures["animals"]["settled"] == 4 and figures["batches"]["settled"] == 2 and figures["left"]["animals"] == 0
    code, out, _ = run_cli(capsys, "status", "--journal", str(path))
    assert out.count("settled as delivered by a person") == 2


# --------------------------------------------------------------------------- end to end on a real simulator

FAST = dict(get_timeout=0.15, post_timeout=0.2, retries=2, backoff=0.01)


def lost_answer(simulator: Any, tmp_path: Path, *, delivered: bool) -> tuple[Simulator, Path]:
    """A run whose first POST stalls past the client's timeout: batch 1 in doubt. The stalled POST is then
    handled (`delivered`) or forgotten, as if the API had lost it."""
    sim = simulator(animals=250, strict=True, stall_min=0.6, stall_max=0.6)
    sim.queue_chaos(Chaos.STALL, method="POST")
    journal = tmp_path / "j.db"
    # post_workers=1: the first POST goes alone to a server not yet known to speak 100-continue, so its body
    # leaves after the wait and the stall outlasts the read timeout.
    first = start_run(Settings(base_url=sim.url, journal=journal, post_workers=1, **FAST))
    assert first.outcome is RunOutcome.EXCEPTIONS and first.in_doubt == (1,)
    wait_until(lambda: sim.stalled_requests == 0 and sim.verify()["delivered"] == 250)
    if not delivered:
        sim.reset_verification()
    return sim, journal


def test_a_delivered_batch_the_strict_api_refuses_to_repeat_is_settled_as_delivered(
    simulator, tmp_path: Path, capsys, restore_signals
) -> None:
    sim, journal = lost_answer(simulator, tmp_path, delivered=True)
    assert resume_run(journal).outcome is RunOutcome.EXCEPTIONS  # the re-send is refused: in doubt for good, whatever resume does
    code, out, _ = run_cli(capsys, "audit", "--journal", str(journal))
    assert code == 1 and "on a re-send (HTTP 500" in out and "a repeat" in out and out.endswith("NOT OK\n")

    code, _, err = run_cli(capsys, "settle", "1", "--delivered", "--reason", "the API refused the repeat", "--journal", str(journal))

    assert code == 0, err
    code, out, _ = run_cli(capsys, "audit", "--journal", str(journal))
    assert code == 0
    assert "batch 1 (100 animals) settled as delivered by a person (" in out and "): the API refused the repeat" in out
    assert out.endswith("OK: every discovered animal was posted exactly once, except 1 batch settled by a person (listed above)\n")
    posts = sim.verify()["posts"]
    code, _, _ = run_cli(capsys, "resume", "--journal", str(journal), "--quiet")
    assert code == 0 and sim.verify()["posts"] == posts  # the run agrees with its audit, and sends nothing more
    verdict = sim.verify()
    assert verdict["missing"] == 0 and verdict["duplicates_delivered"] == 0 and verdict["delivered"] == 250


def test_a_batch_settled_for_re_send_goes_out_on_the_next_resume_even_when_holding(
    simulator, tmp_path: Path, capsys, restore_signals
) -> None:
    sim, journal = lost_answer(simulator, tmp_path, delivered=False)
    posts = sim.verify()["posts"]
    code, _, _ = run_cli(capsys, "resume", "--hold-in-doubt", "--journal", str(journal), "--quiet")
    assert code == 1 and sim.verify()["posts"] == posts  # held: not sent

    code, out, err = run_cli(capsys, "settle", "1", "--resend", "--reason", "not in the home's records", "--journal", str(journal))
    assert code == 0 and out.startswith(f"batch 1 of run 1 settled for re-send: `animal-sync resume --journal {journal}` sends it ("), err

    code, _, err = run_cli(capsys, "resume", "--hold-in-doubt", "--journal", str(journal), "--quiet")

    assert code == 0, err
    verdict = sim.verify()
    assert verdict["posts"] == posts + 1 and verdict["delivered"] == 100  # the one batch the API had lost
    assert verdict["duplicates_rejected"] == verdict["duplicates_delivered"] == 0
    code, out, _ = run_cli(capsys, "audit", "--journal", str(journal))
    assert code == 0 and "batch 1 (100 animals) settled for re-send by a person (" in out
    assert "): not in the home's records; re-sent and answered 2xx" in out


def test_a_re_send_taken_after_doubt_is_at_least_once_until_settled(
    simulator, tmp_path: Path, capsys, restore_signals
) -> None:
    sim, journal = lost_answer(simulator, tmp_path, delivered=False)

    code, _, err = run_cli(capsys, "resume", "--journal", str(journal), "--quiet")  # re-sent (at-least-once), taken

    assert code == 1 and "1 batch posted at least once after doubt (1)" in err
    assert sim.verify()["delivered"] == 100  # the lost batch, and only it, went out again
    code, out, _ = run_cli(capsys, "audit", "--journal", str(journal))
    assert code == 1 and "at_least_once: 1\n  batch_id=1, animals=100, attempts=2" in out and "exactly once" not in out
    code, out, _ = run_cli(capsys, "audit", "--journal", str(journal), "--json")
    assert json.loads(out)["exception_counts"] == {"at_least_once": 1}
    code, _, err = run_cli(capsys, "settle", "--all-in-doubt", "--delivered", "--reason", REASON, "--journal", str(journal))
    assert code == 2 and "run 1 has no batch in doubt" in err  # posted after doubt is not in doubt: name it

    code, _, err = run_cli(capsys, "settle", "1", "--delivered", "--reason", REASON, "--journal", str(journal))

    assert code == 0, err
    code, out, _ = run_cli(capsys, "audit", "--journal", str(journal))
    assert code == 0 and "batch 1 (100 animals) settled as delivered by a person" in out
    code, _, _ = run_cli(capsys, "resume", "--journal", str(journal), "--quiet")
    assert code == 0  # the run's own verdict agrees with the audit's
    with Journal.open(journal, readonly=True) as opened:
        assert opened.batch(1).state is B.POSTED and opened.settlements(1)[1].decision is Decision.DELIVERED


def test_a_re_send_is_refused_for_a_run_resume_cannot_continue(journal: Journal) -> None:
    """Queued for a `resume` that will never come, the batch would wait for ever while the reports said it was queued."""
    [older] = build(journal, "in_doubt")  # run 1, finished with a batch in doubt
    build(journal, "posted")  # run 2: the journal's last run now
    with pytest.raises(NoResendHere, match="continues only the journal's last run"):
        settle(journal, Decision.RESEND, REASON, [older.id], run_id=1, user="dave")
    assert journal.batch(older.id).state is BatchState.IN_DOUBT  # nothing changed
    settle(journal, Decision.DELIVERED, REASON, [older.id], run_id=1, user="dave")  # a judgement is fine on any run

    [abandoned] = build(journal, "in_doubt")  # run 3, then abandoned
    journal.end_run(3, RunState.ABANDONED, {"message": "abandoned by a new run"})
    with pytest.raises(NoResendHere, match="abandoned"):
        settle(journal, Decision.RESEND, REASON, [abandoned.id], user="dave")
