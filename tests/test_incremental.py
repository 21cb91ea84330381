"""`run --incremental`: a real simulator on 127.0.0.1 and a real journal; only what is new or changed is posted, the
rest is journaled `unchanged` with a pointer the audit proves, and a pointer that proves nothing is an exception."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from animal_sync.config import Settings
from animal_sync.journal import AnimalState, Decision, Journal, RunState
from animal_sync.engine.pipeline import Progress, RunOutcome, resume_run, start_run
from animal_sync.reports.settle import settle
from animal_sync.simulator import Chaos, Simulator, SimulatorConfig
from conftest import assert_exactly_once, audited, copy_of, delivered_ids, query, run_cli, settings, tamper

NIGHTLY = dict(batch_size=20, incremental=True)
ANIMALS = 200
REVISED = frozenset({0, 17, 99, 150, 199})


def nightly(url: str, journal: Path, **overrides: object) -> Settings:
    """conftest's settings() for an incremental run in batches of 20."""
    return settings(url, journal, **{**NIGHTLY, **overrides})


def _port(sim: Simulator) -> int:
    return int(sim.url.rsplit(":", 1)[1])


def pointers(journal: Path, run_id: int) -> dict[int, tuple[str, int | None, int | None]]:
    rows = query(journal, "SELECT id, state, delivered_run_id, delivered_batch_id FROM animals WHERE run_id = ?", (run_id,))
    return {animal_id: (state, run, batch) for animal_id, state, run, batch in rows}


def batch_of(journal: Path, run_id: int) -> dict[int, int]:
    return dict(query(journal, "SELECT id, batch_id FROM animals WHERE run_id = ? AND state = 'posted'", (run_id,)))


def test_an_incremental_run_posts_nothing_when_nothing_changed_then_exactly_the_revised_animals(simulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    sim = simulator(animals=ANIMALS, seed=5, strict=True)
    port = _port(sim)

    first = start_run(nightly(sim.url, journal))  # nothing to compare with: a full sync, and it says so
    assert first.outcome is RunOutcome.CLEAN and "full sync" in first.message
    assert_exactly_once(sim)
    sim.reset_verification()  # strict: the next run's POSTs, if any, are judged afresh

    second = start_run(nightly(sim.url, journal))

    assert (second.state, second.outcome) == (RunState.FINISHED, RunOutcome.CLEAN), second.message
    assert second.counts == {"unchanged": ANIMALS} and "compared with the deliveries of run 1" in second.message
    assert sim.verify()["posts"] == 0 and sim.verify()["delivered"] == 0
    first_batches = batch_of(journal, 1)
    assert pointers(journal, 2) == {i: ("unchanged", 1, first_batches[i]) for i in range(ANIMALS)}
    report = audited(journal)
    assert report["ok"] and (report["posted"], report["unchanged"], report["discovered"]) == (0, ANIMALS, ANIMALS)

    sim.stop()  # the upstream revises some animals: same seed, same pages, same URL
    changed = simulator(port=port, animals=ANIMALS, seed=5, strict=True, revised=REVISED)

    third = start_run(nightly(changed.url, journal))

    assert third.outcome is RunOutcome.CLEAN and third.counts == {"posted": len(REVISED), "unchanged": ANIMALS - len(REVISED)}
    assert delivered_ids(changed) == REVISED
    verdict = changed.verify()
    assert verdict["content_mismatches"] == 0 and verdict["duplicates_rejected"] == 0 and verdict["posts"] == 1
    report = audited(journal)
    assert report["ok"] and (report["posted"], report["unchanged"]) == (len(REVISED), ANIMALS - len(REVISED))
    # An unchanged animal points at its latest delivery: run 1's, since run 2 delivered nothing.
    assert {run for state, run, _ in pointers(journal, 3).values() if state == "unchanged"} == {1}

    changed.reset_verification()
    fourth = start_run(nightly(changed.url, journal))  # nothing changed since run 3: the revised now point at it

    assert fourth.counts == {"unchanged": ANIMALS} and changed.verify()["posts"] == 0
    now = pointers(journal, 4)
    assert {i for i, (_, run, _) in now.items() if run == 3} == REVISED
    assert {now[i][2] for i in REVISED} == set(batch_of(journal, 3).values())
    assert audited(journal)["ok"]


def test_without_incremental_a_new_run_posts_every_animal_again(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=60)
    start_run(nightly(sim.url, tmp_path / "j.db"))
    again = start_run(nightly(sim.url, tmp_path / "j.db", incremental=False), full_resync=True)  # chosen, knowingly
    assert again.counts == {"posted": 60} and "incremental" not in again.message
    assert sim.verify()["duplicates_delivered"] == 60


def test_a_resumed_incremental_run_stays_incremental(simulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    sim = simulator(animals=ANIMALS, seed=6)
    port = _port(sim)
    assert start_run(nightly(sim.url, journal, incremental=False)).outcome is RunOutcome.CLEAN
    sim.stop()
    changed = simulator(port=port, animals=ANIMALS, seed=6, revised=REVISED)
    stop = threading.Event()

    def stop_halfway(progress: Progress) -> None:
        if progress.unchanged >= 20:
            stop.set()

    stopped = start_run(nightly(changed.url, journal, workers=2), stop=stop, on_progress=stop_halfway)
    assert stopped.outcome is RunOutcome.STOPPED
    with Journal.open(journal, readonly=True) as opened:
        assert opened.run(2).settings["incremental"] is True

    resumed = resume_run(journal)

    assert resumed.outcome is RunOutcome.CLEAN and "compared with the deliveries of run 1" in resumed.message
    assert resumed.counts == {"posted": len(REVISED), "unchanged": ANIMALS - len(REVISED)}
    assert delivered_ids(changed) == REVISED and changed.verify()["content_mismatches"] == 0
    assert audited(journal)["ok"]


def test_only_earlier_finished_runs_against_the_same_api_count(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "j.db") as journal:
        ours, other = "http://127.0.0.1:1", "http://127.0.0.1:2"
        finished = journal.start_run({}, ours)
        journal.end_run(finished.id, RunState.FINISHED, {})
        elsewhere = journal.start_run({}, other)
        journal.end_run(elsewhere.id, RunState.FINISHED, {})
        abandoned = journal.start_run({}, ours)
        journal.end_run(abandoned.id, RunState.ABANDONED, {})
        current = journal.start_run({}, ours)
        later = journal.start_run({}, ours)
        journal.end_run(later.id, RunState.FINISHED, {})

        assert journal.earlier_finished_runs(journal.run(current.id)) == [finished.id]
        assert journal.last_delivery(journal.run(current.id), 0) is None  # nothing delivered there


def test_without_an_earlier_run_against_this_api_it_is_a_full_sync(simulator, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    elsewhere = simulator(animals=40)
    start_run(nightly(elsewhere.url, journal))
    here = simulator(animals=40)  # another port: another API, so nothing there was delivered here

    result = start_run(nightly(here.url, journal))

    assert result.counts == {"posted": 40} and "full sync: the journal holds no earlier finished run" in result.message
    with Journal.open(journal, readonly=True) as opened:
        assert opened.run(2).outcome["incremental"].startswith("full sync")


def test_the_cli_flag_and_variable_and_the_reports_show_unchanged(simulator, tmp_path: Path, capsys, monkeypatch) -> None:
    sim = simulator(animals=30)
    journal = str(tmp_path / "j.db")
    code, out, _ = run_cli(capsys, "run", "--base-url", sim.url, "--journal", journal, "--quiet", "--incremental")
    assert code == 0 and "30 animals posted (full sync: the journal holds no earlier finished run" in out
    monkeypatch.setenv("ANIMAL_SYNC_INCREMENTAL", "1")

    code, out, err = run_cli(capsys, "run", "--base-url", sim.url, "--journal", journal, "--quiet")

    assert code == 0 and "0 animals posted and 30 unchanged since an earlier delivery" in out, err
    assert sim.verify()["posts"] == 1  # run 1's batch only
    code, out, _ = run_cli(capsys, "status", "--journal", journal, "--json")
    figures = json.loads(out)
    assert figures["animals"]["unchanged"] == 30 and figures["left"]["animals"] == 0
    code, out, _ = run_cli(capsys, "audit", "--journal", journal)
    assert code == 0 and "30 unchanged since a named delivery" in out and out.rstrip().endswith("(30)")
    code, out, _ = run_cli(capsys, "export", "--journal", journal, "--state", "unchanged")
    assert code == 0 and [json.loads(line)["state"] for line in out.splitlines()] == ["unchanged"] * 30
    page = tmp_path / "r.html"
    code, out, _ = run_cli(capsys, "report", "--html", str(page), "--journal", journal)
    assert code == 0 and "audit OK" in out and ">unchanged<" in page.read_text()


# --- the audit does not take a pointer on trust ------------------------------------------------------------------


@pytest.fixture(scope="module")
def incremental_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run 1 posts 30 animals in batches 1-3; run 2, incremental, finds all 30 unchanged."""
    journal = tmp_path_factory.mktemp("incremental") / "j.db"
    with Simulator(SimulatorConfig(port=0, animals=30, chaos=0.0)) as sim:
        for _ in range(2):
            result = start_run(Settings(base_url=sim.url, journal=journal, batch_size=10, incremental=True))
            assert result.outcome is RunOutcome.CLEAN, result.message
    return journal


@pytest.fixture
def journal(incremental_journal: Path, tmp_path: Path) -> Path:
    return copy_of(incremental_journal, tmp_path)


def test_the_untouched_incremental_journal_audits_clean(journal: Path) -> None:
    report = audited(journal)
    assert report["ok"] and report["unchanged"] == 30 and report["exception_counts"] == {}


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        # the pointer names a delivered batch of run 1 that never carried id 5
        (
            "UPDATE animals SET delivered_batch_id = (SELECT min(b.id) FROM batches b WHERE b.run_id = 1"
            " AND NOT EXISTS (SELECT 1 FROM json_each(b.ids) WHERE value = 5)) WHERE run_id = 2 AND id = 5",
            "did not deliver id 5",
        ),
        # the batch delivered another record of it than the one run 2 calls unchanged
        (
            "UPDATE animals SET transformed = json_set(transformed, '$.name', 'Dodo') WHERE run_id = 1 AND id = 5",
            "delivered another record of id 5",
        ),
        (
            "UPDATE batches SET state = 'failed' WHERE id = (SELECT batch_id FROM animals WHERE run_id = 1 AND id = 5)",
            "was not delivered (it is failed)",
        ),
        ("UPDATE animals SET delivered_run_id = 2 WHERE run_id = 2 AND id = 5", "run 2 is not an earlier run of this journal"),
        ("UPDATE animals SET delivered_run_id = NULL WHERE run_id = 2 AND id = 5", "no pointer to the delivery it repeats"),
        ("UPDATE runs SET base_url = 'http://elsewhere:1' WHERE id = 1", "run 1 was against another API"),
        (
            "UPDATE animals SET raw = json_set(raw, '$.name', 'Dodo'), transformed = json_set(transformed, '$.name', 'Dodo')"
            " WHERE run_id = 2 AND id = 5",
            "delivered another record of id 5",
        ),
        ("UPDATE animals SET raw = json_set(raw, '$.name', 'Dodo') WHERE run_id = 2 AND id = 5", "its raw payload does not transform"),
    ],
    ids=[
        "batch-without-the-id", "batch-delivered-another-record", "batch-not-delivered", "run-not-earlier", "no-pointer",
        "run-against-another-api", "record-differs-from-the-delivered", "raw-does-not-transform-to-record",
    ],
)
def test_an_unchanged_animal_whose_pointer_proves_nothing_is_an_exception(journal: Path, sql: str, says: str) -> None:
    tamper(journal, sql)
    report = audited(journal)
    assert not report["ok"], report
    unproven = report["exceptions"]["unchanged_unproven"]
    assert any(says in item["reason"] for item in unproven), unproven
    assert 5 in {item["id"] for item in unproven}


def test_a_journal_state_unchanged_cannot_be_reached_but_from_discovered() -> None:
    from animal_sync.journal import ANIMAL_TRANSITIONS

    assert {source for source, targets in ANIMAL_TRANSITIONS.items() if AnimalState.UNCHANGED in targets} == {AnimalState.DISCOVERED}
    assert ANIMAL_TRANSITIONS[AnimalState.UNCHANGED] == frozenset()


def test_a_batch_settled_as_delivered_is_no_proof_for_a_later_incremental_run(tmp_path: Path) -> None:
    """A person's settlement is a judgement, not an answer: the next incremental run sends those animals again."""
    journal = tmp_path / "j.db"
    with Simulator(SimulatorConfig(port=0, animals=100, chaos=0.0, stall_min=0.6, stall_max=0.6)) as sim:
        sim.queue_chaos(Chaos.STALL, method="POST")  # the first (and only) POST: its answer is lost, the batch in doubt
        first = start_run(Settings(base_url=sim.url, journal=journal, get_timeout=0.15, post_timeout=0.2,
                                   retries=2, post_workers=1, resend_in_doubt=False))
        assert first.in_doubt == (1,)
        while sim.stalled_requests:
            time.sleep(0.02)
        with Journal.open(journal, exclusive=True) as opened:
            settle(opened, Decision.DELIVERED, "checked downstream", [1], user="dave")
        sim.reset_verification()
        second = start_run(Settings(base_url=sim.url, journal=journal, incremental=True))
        assert second.outcome is RunOutcome.CLEAN, second.message
        assert sim.verify()["delivered"] == 100  # all sent again: the settled batch proved nothing
    report = audited(journal)
    assert report["ok"] and report["posted"] == 100
