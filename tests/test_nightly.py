"""What a user types by habit, and what cron and Kubernetes run unattended, never sends every animal twice.

A second full sync is a decision (`run --full-resync`), never a habit; the README's cron and CronJob patterns,
taken from the README itself and run through a shell, resume or run incrementally on a journal of every schema
step the project has had, and a damaged journal stops them instead of starting over.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from sqlite_utils import Database

from animal_sync.config import Settings
from animal_sync.journal import RunState, migrations
from animal_sync.journal.schema import migration_files
from animal_sync.engine.pipeline import RunOutcome, start_run
from animal_sync.simulator import Simulator
from conftest import assert_one_line, query, run_cli

README = Path(__file__).resolve().parents[1] / "docs" / "operations.md"  # the cron and CronJob patterns
BIN = Path(sys.executable).parent  # the venv's bin, where `animal-sync` is installed


def _port(sim: Simulator) -> int:
    return int(sim.url.rsplit(":", 1)[1])


# --- a second full sync is a decision ---------------------------------------------------------------------------


def test_a_second_plain_run_is_refused_with_the_choices_and_sends_no_request(simulator, tmp_path: Path, capsys) -> None:
    sim = simulator(animals=60, strict=True)
    journal = tmp_path / "j.db"
    assert start_run(Settings(base_url=sim.url, journal=journal)).outcome is RunOutcome.CLEAN
    port, url = _port(sim), sim.url
    sim.stop()
    with socket.socket() as listener:  # the API's own port, held by a listener that counts who connects
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        listener.setblocking(False)
        code, _, err = run_cli(capsys, "run", "--base-url", url, "--journal", str(journal), "--quiet")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected: no request was sent
    assert code == 2
    assert_one_line(err, f"journal {journal} already holds run 1, a full sync against {url}")
    for flag in ("--incremental", "--full-resync"):  # each a runnable command on this journal (checked below)
        commands = re.findall(r"`(animal-sync run [^`]+)`", err)
        assert any(flag in c.split() and f"--journal {journal}" in c for c in commands), (flag, err)
    assert "a journal of its own" in err
    assert query(journal, "SELECT count(*) FROM runs") == [(1,)]


def test_each_named_choice_runs_as_printed(simulator, tmp_path: Path, capsys) -> None:
    sim = simulator(animals=60)  # accepts repeats, so the knowing full re-sync can be counted
    journal = tmp_path / "j.db"
    assert start_run(Settings(base_url=sim.url, journal=journal)).outcome is RunOutcome.CLEAN
    code, _, err = run_cli(capsys, "run", "--base-url", sim.url, "--journal", str(journal), "--quiet")
    assert code == 2
    for printed in re.findall(r"`animal-sync (run [^`]+)`", err):
        code, _, err2 = run_cli(capsys, *printed.split(), "--base-url", sim.url, "--quiet")
        assert code == 0, err2
    assert sim.verify()["duplicates_delivered"] == 60  # the incremental run sent nothing; --full-resync all once more
    assert run_cli(capsys, "run", "--base-url", sim.url, "--journal", str(tmp_path / "other.db"), "--quiet")[0] == 0
    assert run_cli(capsys, "run", "--base-url", sim.url, "--journal", str(journal), "--dry-run", "--quiet")[0] == 0


# --- the README's unattended patterns ---------------------------------------------------------------------------


def readme_patterns() -> dict[str, str]:
    """The README's cron lines and CronJob command, as a shell in the journal's directory runs them."""
    text = README.read_text()
    found = {
        "cron": re.search(r"^\*/15 \* \* \* \* (.+)$", text, re.M),
        "nightly": re.search(r"^0 2 \* \* \* (.+)$", text, re.M),
        "cronjob": re.search(r"args:\n\s+- >-\n((?:\s+.+\n)+?)\s+env:", text),
    }
    missing = [name for name, match in found.items() if match is None]
    assert not missing, f"the README no longer shows these patterns: {missing}"
    shell = {name: match.group(1) for name, match in found.items() if match is not None}
    shell["cronjob"] = " ".join(line.strip() for line in shell["cronjob"].splitlines())
    for name, line in shell.items():
        shell[name] = line.replace("cd /srv/animal-sync && ", "").replace(".venv/bin/animal-sync", "animal-sync")
    return shell


def run_pattern(pattern: str, sim: Simulator, journal: Path) -> int:
    env = {
        **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "ANIMAL_SYNC_BASE_URL": sim.url,
        "ANIMAL_SYNC_JOURNAL": str(journal), "ANIMAL_SYNC_LOG_FORMAT": "json",
    }
    done = subprocess.run(["sh", "-c", readme_patterns()[pattern]], cwd=journal.parent, env=env, timeout=120,
                          capture_output=True, text=True)
    return done.returncode


def runs(journal: Path) -> list[tuple[int, str, bool]]:
    """Each run: its id, state, and whether it was incremental."""
    return [(run_id, state, bool(json.loads(settings).get("incremental")))
            for run_id, state, settings in query(journal, "SELECT id, state, settings FROM runs ORDER BY id")]


@pytest.mark.parametrize("pattern", ["cron", "nightly", "cronjob"])
def test_the_readme_patterns_sync_once_then_never_fully_again(simulator, tmp_path: Path, pattern: str) -> None:
    sim = simulator(animals=80, strict=True)  # refuses a repeat: a second full sync would show as refusals
    journal = tmp_path / "animal-sync.db"
    for _ in range(2):
        assert run_pattern(pattern, sim, journal) == 0
    verdict = sim.verify()
    assert verdict["delivered"] == 80 and verdict["duplicates_rejected"] == 0 and verdict["posts_rejected"] == 0
    if pattern == "cron":  # resumes the finished run: a no-op
        assert runs(journal) == [(1, "finished", False)]
    else:  # the first night is a full sync; every later one is incremental and sends nothing unchanged
        assert [(state, incremental) for _, state, incremental in runs(journal)] == [("finished", True)] * 2


# --- journals of every earlier schema step ----------------------------------------------------------------------

# What each later step added, undone to rebuild a journal as an animal-sync of that step left it.
UNDO = {
    "0006_post_assumption": ["ALTER TABLE batches DROP COLUMN assumption"],
    "0005_incremental": ["ALTER TABLE animals DROP COLUMN delivered_run_id", "ALTER TABLE animals DROP COLUMN delivered_batch_id"],
    "0004_upstream_fingerprint": ["ALTER TABLE pages DROP COLUMN digest", "ALTER TABLE pages DROP COLUMN bad_items"],
    "0003_attempt_url": ["ALTER TABLE runs DROP COLUMN attempt_url"],
    "0002_settlements": ["DROP TABLE settlements"],
}
STEPS = [path.stem for path in migration_files()]


def at_step(journal: Path, step: str) -> None:
    """Turn a journal back into one that schema step `step` wrote (an older animal-sync kept no commit count)."""
    with closing(sqlite3.connect(journal)) as db, db:
        for name, undo in UNDO.items():
            if name > step:
                for sql in undo:
                    db.execute(sql)
                db.execute("DELETE FROM _sqlite_migrations WHERE name = ?", [name])
        db.execute("PRAGMA user_version = 0")
    with closing(sqlite3.connect(journal)) as db:
        assert [m.name for m in migrations().applied(Database(db))][-1] == step


def test_the_undo_table_covers_every_step() -> None:
    assert set(UNDO) | {STEPS[0]} == set(STEPS), "a new migration needs its undo here, to test journals it upgrades"


@pytest.fixture
def synced(simulator, tmp_path: Path) -> tuple[Simulator, Path]:
    sim = simulator(animals=60, strict=True)
    journal = tmp_path / "animal-sync.db"
    assert start_run(Settings(base_url=sim.url, journal=journal)).outcome is RunOutcome.CLEAN
    return sim, journal


@pytest.mark.parametrize("step", STEPS)
def test_readers_read_a_journal_of_any_older_step_without_writing_to_it(synced, tmp_path: Path, capsys, step: str) -> None:
    _, journal = synced
    at_step(journal, step)
    before = journal.read_bytes()
    for command in (["status"], ["status", "--json"], ["audit"], ["export", "-o", str(tmp_path / "out.jsonl")],
                    ["report", "--html", str(tmp_path / "r.html")]):
        code, out, err = run_cli(capsys, *command, "--journal", str(journal))
        assert code == 0, (command, err)
    assert journal.read_bytes() == before  # not migrated, not written
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 60


@pytest.mark.parametrize(("step", "pattern"), [(step, "nightly") for step in STEPS] + [(STEPS[0], "cron"), (STEPS[0], "cronjob")])
def test_the_readme_patterns_on_a_journal_of_any_older_step_never_sync_it_fully_again(synced, step: str, pattern: str) -> None:
    sim, journal = synced
    at_step(journal, step)
    assert run_pattern(pattern, sim, journal) == 0
    verdict = sim.verify()
    assert verdict["posts"] == 1 and verdict["duplicates_rejected"] == 0  # the first run's one batch, and nothing more
    expected = [(1, "finished", False)] + ([(2, "finished", True)] if pattern != "cron" else [])
    assert runs(journal) == expected  # resumed (a no-op), or an incremental run; migrated by the writer, under its lock
    assert query(journal, "SELECT max(name) FROM _sqlite_migrations") == [(STEPS[-1],)]


def _corrupt_table(journal: Path, table: str) -> None:
    pages = query(journal, "SELECT rootpage FROM sqlite_master WHERE tbl_name = ? AND rootpage > 0", (table,))
    [(size,)] = query(journal, "PRAGMA page_size")
    with open(journal, "r+b") as handle:
        for (page,) in pages:
            handle.seek((page - 1) * size)
            handle.write(bytes(range(256)) * (size // 256))


@pytest.mark.parametrize(("pattern", "table"), [("cron", "animals"), ("nightly", "batches"), ("cronjob", "counters")])
def test_a_damaged_journal_stops_the_patterns_instead_of_starting_over(synced, pattern: str, table: str) -> None:
    sim, journal = synced
    _corrupt_table(journal, table)
    assert run_pattern(pattern, sim, journal) == 2
    assert sim.verify()["posts"] == 1  # the first run's batch only: nothing started over
    assert query(journal, "SELECT id FROM runs") == [(1,)]


# --- nothing left behind ----------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def test_a_clean_exit_leaves_nothing_beside_the_journal(simulator, tmp_path: Path, capsys) -> None:
    sim = simulator(animals=40, strict=True)
    journal = tmp_path / "j.db"
    for command in (["run", "--base-url", sim.url, "--quiet"], ["resume", "--quiet"], ["status"], ["audit"],
                    ["run", "--base-url", sim.url, "--incremental", "--quiet"]):
        code, _, err = run_cli(capsys, *command, "--journal", str(journal))
        assert code == 0, err
        left = sorted(p.name for p in tmp_path.iterdir())
        assert not [name for name in left if name.endswith(".lock")], command
        if command[0] in ("run", "resume"):  # a writer's clean close checkpoints and removes the -wal, -shm and side file
            assert left == ["j.db"], command


def test_make_clean_removes_and_git_ignores_what_the_demo_writes() -> None:
    written = ["demo.db", "demo.db-wal", "demo.db-shm", "demo.db.lock", "report.html", "raw.csv"]
    done = subprocess.run(["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert set(written) <= set(done.stdout.split()), done.stdout
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=ROOT, capture_output=True, text=True)
    assert sorted(ignored.stdout.split()) == sorted(written), ignored.stdout


def test_a_finished_limited_run_refuses_a_plain_run_in_words_that_say_it_was_limited(simulator, tmp_path: Path, capsys) -> None:
    """A test-mode run delivered only its first animals: a plain run would send those again, and is refused, but the
    refusal must not call the test run a full sync."""
    sim = simulator(animals=60, strict=True)
    journal = tmp_path / "j.db"
    assert start_run(Settings(base_url=sim.url, journal=journal, limit=5)).state is RunState.FINISHED
    code, _, err = run_cli(capsys, "run", "--base-url", sim.url, "--journal", str(journal), "--quiet")
    assert code == 2
    assert_one_line(err, f"journal {journal} already holds run 1, a sync of its first 5 animals against {sim.url}")
    assert "would post those animals again" in err and "a full sync against" not in err
