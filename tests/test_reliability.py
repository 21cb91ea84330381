"""Reliability, fast cases: crashes, chaos, outages, hostile upstream data, journal faults, bad input, secrets.

Each case runs the real engine against the bundled simulator (strict: it refuses a batch repeating a delivered
id) and judges the outcome twice, by the simulator's own ledger and by the journal's audit. The long versions
(20 SIGKILLs, chaos at scale, a longer outage) live in scripts/torture.py, run by `make torture`.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from animal_sync.api import AnimalsApi, FetchFailed
from animal_sync.cli import main
from animal_sync.config import Settings
from animal_sync.journal import Journal, RunState
from animal_sync.pipeline import Progress, resume_run, start_run
from animal_sync.report import audit, status
from animal_sync.simulator import HUGE_BODY_BYTES, UNICODE_NAME, Fault, Simulator, SimulatorConfig

FAST = dict(get_timeout=0.15, post_timeout=3.0, retries=12, backoff=0.01)
CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def settings(url: str, journal: Path, **overrides: Any) -> Settings:
    return Settings(base_url=url, journal=journal, **{**FAST, **overrides})


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "animal_sync", *args]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def audited(journal: Path) -> dict[str, Any]:
    with closing(Journal.open(journal, readonly=True)) as opened:
        return audit(opened)


def query(journal: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the journal with plain sqlite3, read-only, the way an outside observer would (also mid-run)."""
    try:
        with closing(sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def in_doubt_ids(journal: Path) -> set[int]:
    rows = query(journal, "SELECT ids FROM batches WHERE in_doubt_at IS NOT NULL")
    return {animal_id for (ids,) in rows for animal_id in json.loads(ids)}


def wait_for(condition: Any, what: str, process: subprocess.Popen[Any] | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"the child ended (code {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def assert_one_line(err: str, says: str) -> None:
    assert says in err, err
    assert err.startswith("animal-sync: ") and err.count("\n") == 1 and "Traceback" not in err, err


def assert_exactly_once(sim: Simulator) -> None:
    verdict = sim.verify()
    assert verdict["missing"] == 0, verdict["missing_ids"][:20]
    assert verdict["duplicates_rejected"] == 0 and verdict["duplicates_delivered"] == 0, verdict["duplicate_ids"][:20]
    assert verdict["content_mismatches"] == 0, verdict["mismatch_examples"]


def delivered_ids(sim: Simulator) -> set[int]:
    """The ids this simulator's ledger holds (from its complete list of missing ids)."""
    verdict = sim.verify()
    assert len(verdict["missing_ids"]) == verdict["missing"], "missing_ids is capped: use fewer animals"
    return set(range(1, sim.total_animals + 1)) - set(verdict["missing_ids"]) - set(verdict["faulted_ids"])


# --------------------------------------------------------------------------- 1. crashes


def test_sigkill_while_listing_and_fetching_then_resume_delivers_each_animal_once(simulator, tmp_path: Path) -> None:
    """A kill before any POST left: nothing is in doubt, and the resume goes on from what the journal holds."""
    sim = simulator(animals=1_500, strict=True)
    journal = tmp_path / "j.db"
    process = subprocess.Popen(
        cli("run", "--base-url", sim.url, "--journal", str(journal), "--log-format", "json", "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: query(journal, "SELECT count(*) FROM animals WHERE state = 'fetched'") >= [(20,)], "fetches", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    fetched_before = query(journal, "SELECT count(*) FROM animals WHERE state != 'discovered'")[0][0]
    assert query(journal, "SELECT state FROM runs") == [("running",)]
    assert query(journal, "SELECT count(*) FROM batches WHERE state IN ('sending', 'in_doubt')") == [(0,)]

    result = resume_run(journal)

    assert (result.state, result.exit_code) == (RunState.FINISHED, 0), result.message
    assert_exactly_once(sim)
    assert sim.verify()["delivered"] == 1_500
    report = audited(journal)
    assert report["ok"] and report["resent_after_doubt"] == []
    assert 20 <= fetched_before < 1_500  # the kill landed mid-run


# --------------------------------------------------------------------------- 2. chaos and outages


def test_thirty_percent_chaos_with_short_stalls_is_exactly_once(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=400, chaos=30, stall_min=0.2, stall_max=0.6, strict=True)
    journal = tmp_path / "j.db"

    result = start_run(settings(sim.url, journal))

    assert (result.state, result.exit_code) == (RunState.FINISHED, 0), result.message
    assert_exactly_once(sim)
    report = audited(journal)
    assert report["ok"] and report["posted"] == 400
    with closing(Journal.open(journal, readonly=True)) as opened:
        retries = status(opened)["retries"]
    assert retries.get("read_timeout", 0) > 0 and any(kind.startswith("http_5") for kind in retries)


def test_the_api_going_away_mid_run_ends_it_with_exit_1_and_resume_finishes_when_it_is_back(
    simulator, tmp_path: Path
) -> None:
    first = simulator(animals=600, seed=5, strict=True)
    port = int(first.url.rsplit(":", 1)[1])
    journal = tmp_path / "j.db"
    stopped = threading.Event()

    def pull_the_plug(progress: Progress) -> None:
        if progress.posted >= 200 and not stopped.is_set():
            stopped.set()
            first.stop()

    gone = start_run(settings(first.url, journal, retries=3), on_progress=pull_the_plug)

    assert (gone.state, gone.exit_code) == (RunState.INTERRUPTED, 1)
    assert "the Animals API stopped answering" in gone.message and "animal-sync resume" in gone.message
    assert query(journal, "SELECT count(*) FROM batches WHERE state = 'sending'") == [(0,)]
    report = audited(journal)  # consistent: only what is left to do, nothing contradictory
    assert not report["ok"] and report["run_state"] == "interrupted"
    assert set(report["exception_counts"]) <= {"missing", "unlisted_page", "in_doubt"}, report["exception_counts"]

    back = simulator(animals=600, seed=5, strict=True, port=port)  # a fresh ledger on the same address
    result = resume_run(journal)

    assert (result.state, result.exit_code) == (RunState.FINISHED, 0), result.message
    assert audited(journal)["ok"]
    before, after = delivered_ids(first), delivered_ids(back)
    assert before | after == set(range(1, 601))
    assert before & after <= in_doubt_ids(journal)  # only a batch whose answer the outage swallowed goes twice
    for sim in (first, back):
        verdict = sim.verify()
        assert verdict["duplicates_rejected"] == verdict["duplicates_delivered"] == verdict["content_mismatches"] == 0
