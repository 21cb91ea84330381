"""End to end: the real CLI in a child process, killed with SIGKILL mid-run and resumed, against a strict simulator."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from animal_sync.simulator import Chaos, exactly_once
from conftest import cli, in_doubt_ids, wait_until

KILLS = 3


def posted_so_far(journal: Path) -> int:
    """Read the journal the way `status` does, while the child writes it."""
    if not journal.exists():
        return 0
    try:
        with sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM animals WHERE state = 'posted'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def kill_after_progress(process: subprocess.Popen[bytes], journal: Path, target: int) -> None:
    deadline = time.monotonic() + 120
    while posted_so_far(journal) < target:
        assert process.poll() is None, f"the run ended (code {process.returncode}) before the planned kill"
        assert time.monotonic() < deadline, "no progress towards the planned kill"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_sigkill_mid_run_three_times_then_resume_loses_nothing_and_duplicates_only_in_doubt(
    simulator, tmp_path: Path
) -> None:
    sim = simulator(animals=6_000, chaos=2, stall_min=0.2, stall_max=0.6, strict=True)
    journal = tmp_path / "journal.db"
    common = ["--journal", str(journal), "--log-format", "json", "--quiet"]
    rng = random.Random(20261122)
    start = cli("run", "--base-url", sim.url, "--get-timeout", "0.15", "--post-timeout", "3", *common)

    target = 0
    for kill in range(KILLS):
        target += rng.randint(300, 1_200)  # a seeded instant, measured in progress rather than seconds
        command = start if kill == 0 else cli("resume", *common)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill_after_progress(process, journal, target)
        assert process.returncode == -signal.SIGKILL
        with sqlite3.connect(journal) as db:
            assert db.execute("SELECT state FROM runs").fetchone() == ("running",)  # killed mid-flight

    final = subprocess.run(cli("resume", *common), capture_output=True, text=True, timeout=300)
    assert final.returncode in (0, 1), final.stderr

    verdict = sim.verify()
    assert verdict["missing"] == 0, verdict["missing_ids"]
    assert verdict["content_mismatches"] == 0, verdict["mismatch_examples"]
    assert set(verdict["duplicate_ids"]) <= in_doubt_ids(journal)  # every duplicate was named in doubt first
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT count(*) FROM batches WHERE state = 'sending'").fetchone() == (0,)

    audit = subprocess.run(cli("audit", "--json", "--journal", str(journal)), capture_output=True, text=True)
    report = json.loads(audit.stdout)
    assert report["discovered"] == sim.total_animals
    # The only exceptions a kill may leave: a batch in doubt whose re-send the strict API refused, and one whose
    # re-send it took (at least once: the journal cannot know the first send never arrived).
    assert set(report["exception_counts"]) <= {"in_doubt", "at_least_once"}, report["exception_counts"]
    assert audit.returncode == (0 if not report["exception_counts"] else 1)
    assert final.returncode == audit.returncode


@pytest.mark.slow
def test_sigkill_after_the_api_handled_a_post_but_before_its_answer_was_journaled(simulator, tmp_path: Path) -> None:
    """The one window no client can close: the batch must come back in doubt, be named, and be handled as asked."""
    sim = simulator(animals=300, strict=True, stall_min=1.5, stall_max=1.5)
    sim.queue_chaos(Chaos.STALL, method="POST")  # the first POST is held 1.5 s before the API handles it
    journal = tmp_path / "journal.db"
    common = ["--journal", str(journal), "--log-format", "json", "--quiet"]
    # Resumes inherit these: a refusal costs less, and one POST in flight at a time makes the kill hit that one.
    # The first POST of a process meets a server not yet known to speak 100-continue, so its body goes after
    # the --get-timeout wait (0.3 s) and the API, once the stall ends, takes it: the window no client can close.
    run = cli("run", "--base-url", sim.url, "--retries", "2", "--post-workers", "1", "--get-timeout", "0.3", *common)
    process = subprocess.Popen(run, stderr=subprocess.DEVNULL)
    wait_until(lambda: sim.stalled_requests and batches_in(journal, "sending"), 30, "the body's release", process)
    # `sending` is journaled just before the body's first byte is written; the simulator stalls before reading it,
    # so nothing it exposes says the bytes arrived. 0.5 s after the release covers the write itself, and the
    # 1.5 s stall still holds the handler for the kill below.
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    while sim.stalled_requests:  # the API wakes up and delivers the batch nobody is waiting for
        time.sleep(0.01)
    [(batch_id, ids)] = batches_in(journal, "sending")
    assert set(json.loads(ids)) <= set(range(300)) and sim.verify()["delivered"] >= len(json.loads(ids))

    held = subprocess.run(cli("resume", "--hold-in-doubt", *common), capture_output=True, text=True, timeout=120)
    assert held.returncode == 1 and f"1 batch in doubt ({batch_id})" in held.stderr
    assert sim.verify()["missing"] == 0 and sim.verify()["duplicates_rejected"] == 0
    audit = subprocess.run(cli("audit", "--json", "--journal", str(journal)), capture_output=True, text=True)
    report = json.loads(audit.stdout)
    assert audit.returncode == 1 and report["exception_counts"] == {"in_doubt": 1}
    assert report["exceptions"]["in_doubt"][0]["batch_id"] == batch_id
    assert "stopped while this batch's POST was in flight" in report["exceptions"]["in_doubt"][0]["reason"]

    resent = subprocess.run(cli("resume", *common), capture_output=True, text=True, timeout=120)
    assert resent.returncode == 1  # the strict API refuses the repeat: reported, not counted as lost
    verdict = sim.verify()
    # The strict API takes ids one at a time: it stops at the batch's first id, already delivered, and takes none.
    assert verdict["missing"] == 0 and verdict["duplicate_ids"] and set(verdict["duplicate_ids"]) <= set(json.loads(ids))
    assert verdict["delivered"] == sim.total_animals and verdict["duplicates_delivered"] == 0
    report = json.loads(subprocess.run(cli("audit", "--json", "--journal", str(journal)), capture_output=True, text=True).stdout)
    reason = report["exceptions"]["in_doubt"][0]["reason"]
    assert "on a re-send" in reason and "repeat" in reason


@pytest.mark.slow
def test_sigkill_while_a_post_waits_for_100_continue_leaves_it_unsent_and_resume_sends_it_once(
    simulator, tmp_path: Path
) -> None:
    """Killed while the body is held back for `100 Continue`: provably unsent, so a plain first send, exactly once."""
    sim = simulator(animals=1_000, strict=True, stall_min=4.0, stall_max=4.0)
    journal = tmp_path / "journal.db"
    common = ["--journal", str(journal), "--log-format", "json", "--quiet"]
    # One POST at a time, and a wait for 100 (--get-timeout) long enough to kill the process inside it.
    run = cli("run", "--base-url", sim.url, "--post-workers", "1", "--get-timeout", "2", *common)
    process = subprocess.Popen(run, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while posted_so_far(journal) == 0:  # a POST answered: this process has heard the server's `100 Continue`
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    sim.queue_chaos(Chaos.STALL, method="POST")  # the next POST is held 4 s before its handler asks for the body
    deadline = time.monotonic() + 30
    while not (sim.stalled_requests and batches_in(journal, "withheld")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)  # the client is waiting for the 100, its body held back
    process.wait()
    [(batch_id, ids)] = batches_in(journal, "withheld")
    assert batches_in(journal, "sending") == []
    while sim.stalled_requests:  # the API wakes up to a request whose body never comes
        time.sleep(0.01)
    # One POST at a time, each answer journaled before the next leaves: the API holds exactly what the journal says.
    assert sim.verify()["delivered"] == posted_so_far(journal) and sim.verify()["duplicates_rejected"] == 0

    resumed = subprocess.run(cli("resume", *common), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    verdict = sim.verify()
    assert exactly_once(verdict), verdict
    with sqlite3.connect(journal) as db:
        state, in_doubt_at, attempts = db.execute(
            "SELECT state, in_doubt_at, attempts FROM batches WHERE id = ?", [batch_id]
        ).fetchone()
    assert (state, in_doubt_at, attempts) == ("posted", None, 1)  # one body ever released: a plain first send
    audit = subprocess.run(cli("audit", "--json", "--journal", str(journal)), capture_output=True, text=True)
    assert audit.returncode == 0, audit.stdout
    assert json.loads(audit.stdout)["exception_counts"] == {}


def batches_in(journal: Path, state: str) -> list[tuple[int, str]]:
    if not journal.exists():
        return []
    try:
        with sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True) as db:
            return db.execute("SELECT id, ids FROM batches WHERE state = ?", [state]).fetchall()
    except sqlite3.OperationalError:
        return []


@pytest.mark.slow
def test_animal_0_is_synced_once_and_audited_clean(simulator, tmp_path: Path) -> None:
    """Upstream's ids start at 0: animal 0 is journaled, posted in exactly one batch, and counted once by the API."""
    sim = simulator(animals=30)  # lenient: a second delivery of 0 would be taken and counted, not refused
    journal = tmp_path / "journal.db"
    run = subprocess.run(
        cli("run", "--base-url", sim.url, "--journal", str(journal), "--batch-size", "7", "--quiet"),
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr

    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT state, json_extract(transformed, '$.id') FROM animals WHERE id = 0").fetchall() == [
            ("posted", 0)
        ]
        batches = db.execute("SELECT ids FROM batches WHERE state = 'posted'").fetchall()
    assert sum(json.loads(ids).count(0) for (ids,) in batches) == 1, "animal 0 rode in exactly one posted batch"

    verdict = requests.get(f"{sim.url}/_verify", timeout=5).json()
    assert verdict["delivered"] == 30 and 0 not in verdict["missing_ids"] and verdict["missing"] == 0
    assert 0 not in verdict["duplicate_ids"] and verdict["duplicates_delivered"] == 0
    assert exactly_once(verdict)

    audit = subprocess.run(cli("audit", "--json", "--journal", str(journal)), capture_output=True, text=True)
    report = json.loads(audit.stdout)
    assert audit.returncode == 0 and report["ok"] and report["discovered"] == report["posted"] == 30
