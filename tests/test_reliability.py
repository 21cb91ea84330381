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
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import animal_sync
from animal_sync.client.api import AnimalsApi, FetchFailed
from animal_sync.config import Settings
from animal_sync.journal import Journal, RunState
from animal_sync.engine.pipeline import Progress, RunOutcome, resume_run, start_run
from animal_sync.reports.status import status
from animal_sync.simulator import HUGE_BODY_BYTES, UNICODE_NAME, Chaos, Fault, Simulator
from conftest import (
    FAST, assert_exactly_once, assert_one_line, audited, cli, delivered_ids, in_doubt_ids, query, run_cli, settings,
    wait_until,
)

CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def animals_in(journal: Path, state: str) -> int:
    rows = query(journal, "SELECT count(*) FROM animals WHERE state = ?", (state,))
    return rows[0][0] if rows else 0


# --------------------------------------------------------------------------- 1. crashes


def test_sigkill_while_listing_and_fetching_then_resume_delivers_each_animal_once(simulator, tmp_path: Path) -> None:
    """A kill before any POST left: nothing is in doubt, and the resume goes on from what the journal holds."""
    sim = simulator(animals=1_000, strict=True)
    journal = tmp_path / "j.db"
    process = subprocess.Popen(
        cli("run", "--base-url", sim.url, "--journal", str(journal), "--log-format", "json", "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: animals_in(journal, "fetched") >= 20, 60, "fetches", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    fetched_before = query(journal, "SELECT count(*) FROM animals WHERE state != 'discovered'")[0][0]
    assert query(journal, "SELECT state FROM runs") == [("running",)]
    assert query(journal, "SELECT count(*) FROM batches WHERE state IN ('sending', 'in_doubt')") == [(0,)]

    result = resume_run(journal)

    assert (result.state, result.outcome) == (RunState.FINISHED, RunOutcome.CLEAN), result.message
    assert_exactly_once(sim)
    assert sim.verify()["delivered"] == 1_000
    report = audited(journal)
    assert report["ok"] and report["resent_after_doubt"] == []
    assert 20 <= fetched_before < 1_000  # the kill landed mid-run


# --------------------------------------------------------------------------- 2. chaos and outages


def test_thirty_percent_chaos_with_short_stalls_is_exactly_once(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=400, chaos=30, stall_min=0.2, stall_max=0.6, strict=True)
    journal = tmp_path / "j.db"

    result = start_run(settings(sim.url, journal))

    assert (result.state, result.outcome) == (RunState.FINISHED, RunOutcome.CLEAN), result.message
    assert_exactly_once(sim)
    report = audited(journal)
    assert report["ok"] and report["posted"] == 400
    with Journal.open(journal, readonly=True) as opened:
        retries = status(opened).to_json()["retries"]
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

    assert (gone.state, gone.outcome) == (RunState.INTERRUPTED, RunOutcome.UNREACHABLE)
    assert "the Animals API stopped answering" in gone.message and "animal-sync" not in gone.message  # the CLI's words
    assert query(journal, "SELECT count(*) FROM batches WHERE state = 'sending'") == [(0,)]
    report = audited(journal)  # consistent: only what is left to do, nothing contradictory
    assert not report["ok"] and report["run_state"] == "interrupted"
    assert set(report["exception_counts"]) <= {"missing", "unlisted_page", "in_doubt"}, report["exception_counts"]

    back = simulator(animals=600, seed=5, strict=True, port=port)  # a fresh ledger on the same address
    result = resume_run(journal)

    assert result.state is RunState.FINISHED, result.message
    # A batch whose answer the outage swallowed is re-sent to the fresh API and taken: at least once, and said so.
    report = audited(journal)
    assert set(report["exception_counts"]) <= {"at_least_once"}, report["exception_counts"]
    assert {item["batch_id"] for item in report["exceptions"].get("at_least_once", [])} == set(report["resent_after_doubt"])
    assert result.outcome is (RunOutcome.EXCEPTIONS if report["exception_counts"] else RunOutcome.CLEAN) and report["ok"] == (result.outcome is RunOutcome.CLEAN)
    before, after = delivered_ids(first), delivered_ids(back)
    assert before | after == set(range(600))
    assert before & after <= in_doubt_ids(journal)  # only a batch whose answer the outage swallowed goes twice
    for sim in (first, back):
        verdict = sim.verify()
        assert verdict["duplicates_rejected"] == verdict["duplicates_delivered"] == verdict["content_mismatches"] == 0


# --------------------------------------------------------------------------- 3. hostile upstream data

HOSTILE = {  # id -> fault; ids spread over pages 1-13 of 20
    3: Fault.BAD_BORN_AT, 14: Fault.FRIENDS_TYPE, 25: Fault.MISSING_NAME, 36: Fault.WRONG_ID, 47: Fault.HTML,
    58: Fault.TRUNCATED, 69: Fault.EXTRA_FIELDS, 80: Fault.UNICODE_NAME, 91: Fault.LONG_NAME, 102: Fault.HUGE_BODY,
    113: Fault.DUPLICATE_LISTING,
}  # Fault.TOTAL_PAGES_CHANGE stops a run (the upstream changed under it): test_pipeline covers it
QUARANTINE_REASONS = {  # what the journal must say about each undeliverable kind
    3: "born_at is not epoch milliseconds, an ISO-8601 string or null: 'yesterday'",
    14: "friends is neither a comma-joined string nor a list: 42",
    25: "missing name",
    36: "id mismatch: asked for 36, got 1000036",
    47: "body is not JSON",
    58: "body is not JSON",
    102: f"body of {HUGE_BODY_BYTES} bytes is over the 1000000-byte limit",  # refused unread
}


@pytest.fixture
def hostile_run(simulator, tmp_path: Path) -> tuple[Simulator, Path]:
    sim = simulator(animals=200, strict=True, faults={i: f.value for i, f in HOSTILE.items()})
    journal = tmp_path / "j.db"
    result = start_run(settings(sim.url, journal, retries=2))
    assert (result.state, result.outcome) == (RunState.FINISHED, RunOutcome.EXCEPTIONS), result.message  # 1: some were bad
    return sim, journal


def test_each_bad_record_is_set_aside_with_its_reason_and_the_rest_is_delivered_once(hostile_run) -> None:
    sim, journal = hostile_run
    rows = dict(query(journal, "SELECT id, last_error FROM animals WHERE state = 'quarantined'"))
    assert set(rows) == set(QUARANTINE_REASONS)
    for animal_id, reason in QUARANTINE_REASONS.items():
        assert reason in rows[animal_id], (animal_id, rows[animal_id])
    verdict = sim.verify()
    assert set(verdict["faulted_ids"]) == set(QUARANTINE_REASONS) and verdict["faulted_delivered"] == []
    assert verdict["missing"] == 0 and verdict["delivered"] == 200 - len(QUARANTINE_REASONS)
    assert verdict["duplicates_rejected"] == verdict["duplicates_delivered"] == verdict["content_mismatches"] == 0
    assert audited(journal)["exception_counts"] == {"quarantined": len(QUARANTINE_REASONS)}


def test_unknown_fields_are_kept_raw_and_dropped_from_the_post(hostile_run) -> None:
    _, journal = hostile_run
    [(state, raw, transformed)] = query(journal, "SELECT state, raw, transformed FROM animals WHERE id = 69")
    assert state == "posted"
    assert json.loads(raw)["colour"] == "red" and json.loads(raw)["legs"] == 4  # byte for byte as received
    assert set(json.loads(transformed)) == {"id", "name", "born_at", "friends"}


def test_non_ascii_and_very_long_names_are_delivered_intact(hostile_run) -> None:
    sim, journal = hostile_run
    names = dict(query(journal, "SELECT id, json_extract(transformed, '$.name') FROM animals WHERE id IN (80, 91)"))
    assert names[80] == UNICODE_NAME and len(names[91]) == 5_000
    assert sim.verify()["content_mismatches"] == 0  # the simulator judged both names against its own


def test_a_huge_body_is_quarantined_by_size_and_never_stored(hostile_run) -> None:
    _, journal = hostile_run
    [(state, raw, reason)] = query(journal, "SELECT state, raw, last_error FROM animals WHERE id = 102")
    assert (state, raw, reason) == ("quarantined", None, QUARANTINE_REASONS[102])


def test_a_huge_body_never_enters_the_clients_memory(simulator) -> None:
    sim = simulator(animals=20, faults={7: Fault.HUGE_BODY.value})
    api = AnimalsApi(Settings(base_url=sim.url, retries=0))
    tracemalloc.start()
    try:
        with pytest.raises(FetchFailed, match="over the 1000000-byte limit"):
            api.fetch_detail(7)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        api.close()
    assert peak < 2_000_000, f"peak {peak} bytes for a {HUGE_BODY_BYTES}-byte body"


def test_a_huge_body_without_content_length_is_cut_off_at_the_limit() -> None:
    """A server that streams without announcing a length: the client stops reading at the limit."""
    sent = []

    class Endless(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # no Content-Length: the body ends when the connection closes

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            try:
                for _ in range(HUGE_BODY_BYTES // 65_536):
                    self.wfile.write(b"x" * 65_536)
                    sent.append(65_536)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = AnimalsApi(Settings(base_url=f"http://127.0.0.1:{server.server_port}", retries=0))
    tracemalloc.start()
    try:
        with pytest.raises(FetchFailed, match="body is over the 1000000-byte limit"):
            api.fetch_detail(7)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        api.close()
        server.shutdown()
        server.server_close()
    assert peak < 4_000_000, f"peak {peak} bytes"
    assert sum(sent) < HUGE_BODY_BYTES  # the client hung up long before the end


def test_an_id_listed_on_two_pages_is_posted_once(hostile_run) -> None:
    sim, journal = hostile_run
    assert query(journal, "SELECT count(*), max(state) FROM animals WHERE id = 113") == [(1, "posted")]
    assert query(journal, "SELECT count(*) FROM batches, json_each(batches.ids) WHERE json_each.value = 113") == [(1,)]
    assert 113 not in sim.verify()["duplicate_ids"]


def test_total_pages_changing_mid_listing_stops_the_run_and_audit_names_it(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=200, strict=True, faults={124: Fault.TOTAL_PAGES_CHANGE.value})
    journal = tmp_path / "j.db"
    result = start_run(settings(sim.url, journal))
    assert (result.state, result.outcome) == (RunState.INTERRUPTED, RunOutcome.UPSTREAM_CHANGED)
    assert query(journal, "SELECT total_pages FROM runs") == [(20,)]  # page 13 said 21: not journaled
    assert query(journal, "SELECT count(*) FROM pages WHERE total_pages != 20") == [(0,)]
    report = audited(journal)
    assert not report["ok"]
    assert report["exceptions"]["upstream_changed"] == [{"reason": "total_pages was 20, the API now says 21 (more pages)"}]
    assert sim.verify()["duplicates_rejected"] == sim.verify()["duplicates_delivered"] == 0


def test_deliverable_oddities_alone_finish_clean(simulator, tmp_path: Path) -> None:
    deliverable = {i: f.value for i, f in HOSTILE.items() if f.deliverable}
    sim = simulator(animals=200, strict=True, faults=deliverable)
    journal = tmp_path / "j.db"
    result = start_run(settings(sim.url, journal))
    assert (result.state, result.outcome) == (RunState.FINISHED, RunOutcome.CLEAN), result.message
    assert_exactly_once(sim)
    assert sim.verify()["delivered"] == 200 and audited(journal)["ok"]


# --------------------------------------------------------------------------- 5. journal faults


@pytest.fixture
def finished_journal(simulator, tmp_path: Path) -> tuple[Simulator, Path]:
    sim = simulator(animals=300, strict=True)
    journal = tmp_path / "j.db"
    assert start_run(settings(sim.url, journal)).outcome is RunOutcome.CLEAN
    return sim, journal


@pytest.mark.slow
def test_a_second_writer_is_refused_while_a_run_holds_the_journal(simulator, tmp_path: Path, capsys, restore_signals) -> None:
    sim = simulator(animals=2_000, strict=True)
    journal = tmp_path / "j.db"
    process = subprocess.Popen(
        cli("run", "--base-url", sim.url, "--journal", str(journal), "--log-format", "json", "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wait_until(lambda: animals_in(journal, "posted") >= 100, 60, "posts", process)

    for command in (["resume"], ["run", "--base-url", sim.url, "--abandon"]):
        code, _, err = run_cli(capsys, *command, "--journal", str(journal))
        assert code == 2
        assert_one_line(err, f"journal {journal} is in use by another animal-sync process (pid {process.pid})")
    code, out, _ = run_cli(capsys, "status", "--journal", str(journal), "--json")  # readers are welcome meanwhile
    assert code == 0 and json.loads(out)["state"] == "running"

    assert process.wait(timeout=120) == 0, process.stderr.read()
    assert_exactly_once(sim)
    assert sim.verify()["delivered"] == 2_000 and audited(journal)["ok"]


@pytest.mark.slow
def test_deleting_the_lock_file_mid_run_does_not_let_a_second_writer_in(simulator, tmp_path: Path, capsys, restore_signals) -> None:
    """The `.lock` beside the journal only shows the writer's pid; the exclusion is a lock on the journal itself."""
    sim = simulator(animals=600, strict=True, stall_min=3.0, stall_max=3.0)
    journal = tmp_path / "j.db"
    # A 5 s wait for `100 Continue` outlasts the 3 s stall: the stalled batch stays in flight, its body held back.
    process = subprocess.Popen(
        cli("run", "--base-url", sim.url, "--journal", str(journal), "--log-format", "json", "--quiet", "--get-timeout", "5"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wait_until(lambda: animals_in(journal, "posted") >= 100, 60, "posts", process)
    sim.queue_chaos(Chaos.STALL, method="POST")  # the next batch is held 3 s: in flight, journaled `withheld`
    wait_until(lambda: sim.stalled_requests >= 1, 60, "a stalled POST", process)
    wait_until(lambda: bool(query(journal, "SELECT 1 FROM batches WHERE state = 'withheld'")), 60, "a withheld batch", process)
    stalled = query(journal, "SELECT id FROM batches WHERE state = 'withheld' ORDER BY id")
    journal.with_name("j.db.lock").unlink()

    code, _, err = run_cli(capsys, "resume", "--journal", str(journal), "--quiet")

    assert code == 2
    # The pid comes back with the writer's next durable commit (it rewrites the side file); either way, refused.
    assert code == 2 and "\n" not in err.strip()
    assert re.search(rf"journal {re.escape(str(journal))} is in use by another animal-sync process \(pid (unknown|{process.pid})\)", err)
    held = query(journal, "SELECT id, state, in_doubt_at FROM batches WHERE id IN (%s)" % ",".join("?" * len(stalled)),
                 tuple(batch_id for (batch_id,) in stalled))
    assert sim.stalled_requests >= 1 and all(state == "withheld" and doubt is None for _, state, doubt in held), held
    assert process.wait(timeout=120) == 0, process.stderr.read()
    assert_exactly_once(sim)
    assert sim.verify()["delivered"] == 600 and audited(journal)["ok"]


def _corrupt_table(journal: Path, table: str) -> None:
    """Overwrite the root pages of a table and its indexes with noise: the file still opens, its schema still reads."""
    pages = query(journal, "SELECT rootpage FROM sqlite_master WHERE tbl_name = ? AND rootpage > 0", (table,))
    [(size,)] = query(journal, "PRAGMA page_size")
    with open(journal, "r+b") as handle:
        for (page,) in pages:
            handle.seek((page - 1) * size)
            handle.write(bytes(range(256)) * (size // 256))


@pytest.mark.parametrize("command", ["status", "audit", "resume", "run"])
def test_a_damaged_journal_gives_one_line_and_exit_2(finished_journal, capsys, restore_signals, command: str) -> None:
    sim, journal = finished_journal
    _corrupt_table(journal, "animals")
    extra = {"status": [], "audit": [], "resume": ["--quiet"], "run": ["--quiet", "--base-url", sim.url]}[command]
    code, _, err = run_cli(capsys, command, "--journal", str(journal), *extra)
    assert code == 2
    # A new run checks the whole file first: a damaged journal must never look like one to start over in.
    assert_one_line(err, "is damaged (" if command == "run" else "database disk image is malformed")


def test_a_journal_from_a_newer_animal_sync_is_refused_untouched(finished_journal, capsys, restore_signals) -> None:
    sim, journal = finished_journal
    with closing(sqlite3.connect(journal)) as db, db:
        db.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('animal_sync', '0999_future', '')"
        )
    before = journal.read_bytes()
    for command in (["run", "--base-url", sim.url], ["resume"], ["status"], ["audit"]):
        code, _, err = run_cli(capsys, *command, "--journal", str(journal))
        assert code == 2
        assert_one_line(err, "was written by a newer animal-sync (schema step 0999_future); upgrade animal-sync")
    assert journal.read_bytes() == before


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make a file read-only in a way that binds the current user: chmod for a user, the immutable flag for root."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        path.chmod(0o644)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root, and `chattr +i` is unavailable here: no way to make a file read-only for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_journal_refuses_writers_with_one_line_and_still_reports(finished_journal, capsys, restore_signals) -> None:
    sim, journal = finished_journal
    with read_only(journal):
        for command in (["run", "--base-url", sim.url, "--abandon"], ["resume"]):
            code, _, err = run_cli(capsys, *command, "--journal", str(journal))
            assert code == 2
            assert_one_line(err, f"journal {journal} is read-only")
        code, out, _ = run_cli(capsys, "audit", "--journal", str(journal))
        assert code == 0 and "OK: every discovered animal was posted exactly once" in out
        code, out, _ = run_cli(capsys, "status", "--journal", str(journal), "--json")
        assert code == 0 and json.loads(out)["state"] == "finished"
    code, _, err = run_cli(capsys, "resume", "--journal", str(journal), "--quiet")  # writable again: usable
    assert code == 0, err
    assert sim.verify()["posts"] == 3


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _runtime_requirements(name: str) -> Iterator[metadata.Distribution]:
    """The installed distribution `name` and everything it needs at run time (no extras), each once."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        dist = metadata.distribution(pending.pop())
        key = canonicalize_name(dist.metadata["Name"])
        if key in seen:
            continue
        seen.add(key)
        yield dist
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)


def _readable_copy(into: Path) -> None:
    """Copy animal_sync and its run-time dependencies into `into`, as a wheel would lay them out.

    A clone in a directory other users cannot enter (a 0700 home or temp dir) holds both the source tree and the
    venv's site-packages, so `nobody` could import neither from there.
    """
    package = Path(animal_sync.__file__).resolve().parent
    shutil.copytree(package, into / "animal_sync")  # with its bytecode: `nobody` could not write it, only recompile
    migrations = into / "animal_sync" / "migrations"
    if not migrations.is_dir():  # a checkout keeps the schema history at the top level; a wheel ships it inside
        shutil.copytree(package.parents[1] / "migrations", migrations)
    for dist in _runtime_requirements("animal-sync"):
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if ".." in file.parts or not source.is_file() or source.suffix == ".pth":
                continue  # scripts outside site-packages, and the editable install's pointer to the tree
            (into / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / file)


@pytest.fixture(scope="module")
def nobody_cli() -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """How to run the CLI as `nobody`: (command prefix, environment, working directory).

    Runs a world-readable copy of the package and its dependencies under the base interpreter, so the tests hold
    wherever the clone lives; skips, saying why, only when `nobody` cannot run even that.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to run the CLI as another user (`nobody`)")
    if shutil.which("setpriv") is None or subprocess.run([*NOBODY, "true"], capture_output=True).returncode:
        pytest.skip("`setpriv` cannot switch to nobody here")
    copy = Path(tempfile.mkdtemp(prefix="animal-sync-nobody-"))
    try:
        copy.chmod(0o755)
        _readable_copy(copy)
        python = getattr(sys, "_base_executable", sys.executable)  # a venv inside the clone is out of reach too
        prefix = [*NOBODY, python, "-m", "animal_sync"]
        env = {**CHILD_ENV, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
        probe = subprocess.run([*prefix, "--help"], capture_output=True, text=True, timeout=60, env=env, cwd=copy)
        if probe.returncode:
            said = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"`nobody` cannot run {python} on a readable copy in {copy}: {said}")
        yield prefix, env, copy
    finally:
        shutil.rmtree(copy)


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="animal-sync-reliability-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def as_nobody(nobody_cli: tuple[list[str], dict[str, str], Path]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `animal-sync ARGS` as `nobody`, from the readable copy."""
    prefix, env, cwd = nobody_cli

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd)

    return run


@pytest.mark.slow
def test_a_journal_another_user_owns_refuses_writers_and_still_reports(finished_journal, nobody_dir: Path, as_nobody) -> None:
    """The usual read-only journal: someone else's file in someone else's directory (no -wal/-shm can be made)."""
    _, journal = finished_journal
    theirs = nobody_dir / "j.db"
    shutil.copy(journal, theirs)
    for command in ("resume", "run"):
        done = as_nobody(command, "--journal", str(theirs))
        assert done.returncode == 2
        assert_one_line(done.stderr, f"journal {theirs} is read-only")
    done = as_nobody("audit", "--journal", str(theirs))
    assert done.returncode == 0, done.stderr
    assert "OK: every discovered animal was posted exactly once" in done.stdout
    done = as_nobody("status", "--journal", str(theirs), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["animals"]["posted"] == 300
    assert sorted(p.name for p in nobody_dir.iterdir()) == ["j.db"]


def test_an_unreadable_journal_is_named_as_such(finished_journal, nobody_dir: Path, as_nobody) -> None:
    _, journal = finished_journal
    theirs = nobody_dir / "j.db"
    shutil.copy(journal, theirs)
    theirs.chmod(0o600)
    for command in ("status", "audit"):
        done = as_nobody(command, "--journal", str(theirs))
        assert done.returncode == 2
        assert_one_line(done.stderr, "not readable")
        assert str(theirs) in done.stderr


def test_a_lock_file_that_cannot_be_opened_gives_one_line(finished_journal, nobody_dir: Path, as_nobody) -> None:
    """A journal shared by group, whose lock file another user created: refused with one line, not a traceback."""
    _, journal = finished_journal
    nobody_dir.chmod(0o777)
    theirs = nobody_dir / "j.db"
    shutil.copy(journal, theirs)
    theirs.chmod(0o666)
    lock = nobody_dir / "j.db.lock"
    lock.write_text("1\n")
    lock.chmod(0o644)
    done = as_nobody("resume", "--journal", str(theirs), "--quiet")
    assert done.returncode == 2
    assert_one_line(done.stderr, f"cannot lock journal {theirs}")


# A child whose files may not grow past a limit: past it, write() fails with EFBIG, as on a full disk.
SMALL_DISK = (
    "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "limit = int(sys.argv.pop(1)); resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
    "sys.argv[0] = 'animal-sync'; runpy.run_module('animal_sync', run_name='__main__')"
)


def on_small_disk(limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SMALL_DISK, str(limit), *args], capture_output=True, text=True, timeout=120, env=CHILD_ENV
    )


@pytest.mark.slow
def test_a_disk_filling_up_mid_run_gives_one_line_and_resume_finishes_exactly_once(
    simulator, tmp_path: Path, capsys, restore_signals
) -> None:
    sim = simulator(animals=1_500, strict=True)
    journal = tmp_path / "j.db"

    full = on_small_disk(
        900_000, "run", "--base-url", sim.url, "--journal", str(journal), "--log-format", "json", "--quiet", "--retries", "2"
    )

    assert full.returncode == 2
    # A step's commit failed, or the journal saw it had no room for the next batch's answer and stopped sending.
    assert_one_line(full.stderr, f"animal-sync: journal {journal}: ")
    assert "disk I/O error" in full.stderr or "of room left to journal into" in full.stderr, full.stderr
    assert 0 < sim.verify()["delivered"] < 1_500  # it filled up mid-run
    assert query(journal, "PRAGMA integrity_check") == [("ok",)]
    code, out, _ = run_cli(capsys, "status", "--journal", str(journal), "--json")
    assert code == 0 and json.loads(out)["state"] == "running"
    code, out, _ = run_cli(capsys, "audit", "--journal", str(journal), "--json")
    assert code == 1 and set(json.loads(out)["exception_counts"]) <= {"missing", "unlisted_page"}

    result = resume_run(journal)  # room again

    assert result.state is RunState.FINISHED
    verdict = sim.verify()
    assert verdict["missing"] == 0 and verdict["duplicates_delivered"] == 0 and verdict["content_mismatches"] == 0
    # A POST answered while the disk was full could not be journaled: its batch comes back in doubt, is re-sent,
    # and the strict API refuses the repeat. That is the only way an id may be seen twice, and it is named (a re-send
    # the API takes instead is named "at least once": the journal cannot tell that the first send was lost).
    assert set(verdict["duplicate_ids"]) <= in_doubt_ids(journal)
    report = audited(journal)
    assert set(report["exception_counts"]) <= {"in_doubt", "at_least_once"}, report["exception_counts"]
    assert result.outcome is (RunOutcome.EXCEPTIONS if report["exception_counts"] else RunOutcome.CLEAN), result.message


def test_a_disk_full_before_the_journal_exists_gives_one_line_and_a_later_run_works(
    simulator, tmp_path: Path, capsys, restore_signals
) -> None:
    sim = simulator(animals=50, strict=True)
    journal = tmp_path / "j.db"
    full = on_small_disk(8_192, "run", "--base-url", sim.url, "--journal", str(journal), "--quiet")
    assert full.returncode == 2
    assert_one_line(full.stderr, f"animal-sync: journal {journal}: disk I/O error")  # not "not a journal"
    code, _, err = run_cli(capsys, "run", "--base-url", sim.url, "--journal", str(journal), "--quiet")
    assert code == 0, err
    assert_exactly_once(sim)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs), so a full disk is ENOSPC for every file on it, as in production."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Take all but `leave` bytes of the disk's free space with one file (removed later: the disk "grows")."""
    ballast = disk / "ballast"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with ballast.open("wb") as handle:
        handle.truncate(0)
        os.posix_fallocate(handle.fileno(), 0, max(0, free - leave))
    return ballast


def stalled_post_on(simulator, tiny_disk: Path, *flags: str) -> tuple[Simulator, Path, subprocess.Popen[str]]:
    """A `run` child on the tiny disk whose one batch's POST the strict API holds for 2 s, once it is held."""
    sim = simulator(animals=100, strict=True, stall_min=2.0, stall_max=2.0)  # one batch
    journal = tiny_disk / "j.db"
    sim.queue_chaos(Chaos.STALL, method="POST")
    process = subprocess.Popen(
        cli("run", "--base-url", sim.url, "--journal", str(journal), "--log-format", "json", "--quiet", *flags),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wait_until(lambda: sim.stalled_requests >= 1, 60, "the stalled POST", process)
    return sim, journal, process


def handled_posts(sim: Simulator) -> int:
    verdict = sim.verify()
    return verdict["posts"] + verdict["posts_rejected"]


@pytest.mark.slow
def test_a_disk_filling_while_an_answer_is_journaled_names_the_batch_and_a_resume_on_the_full_disk_sends_nothing(
    simulator, tiny_disk: Path, capsys, restore_signals
) -> None:
    sim, journal, process = stalled_post_on(simulator, tiny_disk)
    # No 100 yet from this server, so the body follows the wait: released (journaled `sending`) into the stall.
    wait_until(lambda: bool(query(journal, "SELECT 1 FROM batches WHERE state = 'sending'")), 60, "the body released", process)
    # The disk fills while the API holds the POST: its answer (100 animals' rows) no longer fits; smaller commits do.
    ballast = fill(tiny_disk, leave=28 * 1024)
    process.wait(timeout=60)
    *events, said = process.stderr.read().strip().splitlines()

    assert process.returncode == 2 and sim.verify()["delivered"] == 100
    [(batch_id,)] = query(journal, "SELECT id FROM batches WHERE state = 'sending'")
    assert said.startswith(f"animal-sync: journal {journal}: ") and "Traceback" not in said, said
    assert f"""batch {batch_id} (100 animals): the API said HTTP 200 '{{"message":"Helped 100 find home"}}'""" in said
    [event] = [json.loads(line) for line in events if "batch_answer_not_journaled" in line]
    assert event["level"] == "error" and (event["batch_id"], event["animals"], event["status"]) == (batch_id, 100, 200)

    posts = handled_posts(sim)
    code, _, err = run_cli(capsys, "resume", "--journal", str(journal), "--log-format", "json", "--quiet")  # still full

    assert code == 2
    *warnings, said = err.strip().splitlines()  # the batch found in doubt and queued again, then:
    assert_one_line(said + "\n", f"the answer to batch {batch_id} (100 animals) needs about")
    assert "so it was not sent" in said and all(json.loads(line)["level"] == "warning" for line in warnings)
    assert handled_posts(sim) == posts  # nothing re-sent into a journal that cannot take the answer

    ballast.unlink()  # the disk grows
    result = resume_run(journal, overrides={"retries": 2, "backoff": 0.01})  # the strict API refuses the repeat
    assert result.state is RunState.FINISHED
    verdict = sim.verify()
    assert verdict["delivered"] == 100 and verdict["duplicates_delivered"] == 0
    assert set(verdict["duplicate_ids"]) <= in_doubt_ids(journal)  # a repeat only inside the batch named above
    assert set(audited(journal)["exception_counts"]) <= {"in_doubt"}


@pytest.mark.slow
def test_a_disk_filling_while_a_post_waits_for_100_continue_withholds_the_body_and_nothing_is_in_doubt(
    simulator, tiny_disk: Path, capsys, restore_signals
) -> None:
    """Room is measured again at the release: a body the answer could not be journaled for never leaves."""
    sim, journal, process = stalled_post_on(simulator, tiny_disk, "--get-timeout", "1")
    assert query(journal, "SELECT state FROM batches") == [("withheld",)]
    ballast = fill(tiny_disk, leave=28 * 1024)  # before the 1 s wait ends and the body would be released
    process.wait(timeout=60)
    said = process.stderr.read().strip().splitlines()[-1]

    assert process.returncode == 2 and "the answer to batch 1 (100 animals) needs about" in said, said
    while sim.stalled_requests:
        time.sleep(0.01)
    assert sim.verify()["delivered"] == 0 and handled_posts(sim) == 0  # the handler never got a body
    assert query(journal, "SELECT state, in_doubt_at FROM batches") == [("pending", None)]  # unsent, not in doubt
    ballast.unlink()
    result = resume_run(journal)
    assert result.outcome is RunOutcome.CLEAN, result.message
    assert_exactly_once(sim)


# --------------------------------------------------------------------------- 6. bad command-line input


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--retries", "-1"], "--retries must be 0 or more"),
        (["--post-workers", "0"], "--post-workers must be between 1 and 64"),
        (["--post-workers", "65"], "--post-workers must be between 1 and 64"),
        (["--post-timeout", "0"], "--post-timeout must be above 0"),
        (["--base-url", "http://"], "--base-url must be an http(s) URL with a host"),
        (["--batch-size", "ten"], "Invalid value for '--batch-size'"),
        (["--limit", "-3"], "--limit must be 1 or more"),
    ],
)
def test_more_bad_flags_give_one_line_exit_2_and_write_nothing(capsys, tmp_path: Path, flags: list[str], says: str) -> None:
    journal = tmp_path / "j.db"
    code, _, err = run_cli(capsys, "run", "--journal", str(journal), *flags)
    assert code == 2
    assert_one_line(err, says)
    assert not journal.exists()


@pytest.mark.parametrize("command", ["status", "audit"])
def test_report_commands_name_what_is_wrong_with_the_journal_path(finished_journal, tmp_path: Path, capsys, command: str) -> None:
    _, journal = finished_journal
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    cases = [
        ([str(tmp_path)], "no journal at"),  # a directory
        ([str(not_a_dir / "j.db")], "no journal at"),  # under a file
        ([str(journal), "--run", "99"], f"journal {journal} has no run 99"),
    ]
    for args, says in cases:
        code, _, err = run_cli(capsys, command, "--journal", *args)
        assert code == 2, (args, err)
        assert_one_line(err, says)


# --------------------------------------------------------------------------- 7. secrets


class Gatekeeper:
    """A reverse proxy in front of the simulator that answers 401 to any request without the expected credentials.

    With `post_status`, every POST gets that answer whatever it carries (a credential that may read, not write).
    """

    def __init__(self, upstream: Simulator, authorization: str, post_status: int | None = None) -> None:
        self.passed = self.refused = 0
        host, port = upstream.url.removeprefix("http://").rsplit(":", 1)
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != authorization or (post_status and self.command == "POST"):
                    gate.refused += 1
                    status, content_type, answer = post_status or 401, "application/json", b'{"detail":"unauthorized"}'
                else:
                    gate.passed += 1
                    connection = http.client.HTTPConnection(host, int(port), timeout=30)
                    connection.request(self.command, self.path, body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    status, content_type, answer = response.status, response.getheader("Content-Type"), response.read()
                    connection.close()
                self.send_response(status)
                self.send_header("Content-Type", content_type or "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client that stops mid-answer is normal here; socketserver would print it into the CLI's captured stderr.
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


TOKEN = "tok-3f9a1c7e55d2"
USER, PASSWORD = "keeper", "pw-8b41d07c9e"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bearer-token", "url-password"])
def test_credentials_are_sent_but_never_logged_journaled_or_reported(
    simulator, tmp_path: Path, capsys, kind: str
) -> None:
    sim = simulator(animals=600, strict=True)
    if kind == "bearer-token":
        authorization, secrets = f"Bearer {TOKEN}", [TOKEN]
        env = {**CHILD_ENV, "ANIMAL_SYNC_TOKEN": TOKEN}
        gate = Gatekeeper(sim, authorization)
        url = f"http://127.0.0.1:{gate.port}"
        resume_flags: list[str] = []
    else:
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        authorization, secrets = f"Basic {basic}", [PASSWORD, basic]
        env = CHILD_ENV
        gate = Gatekeeper(sim, authorization)
        url = f"http://{USER}:{PASSWORD}@127.0.0.1:{gate.port}"
        resume_flags = ["--base-url", url]  # the journal keeps only a redacted URL: the password comes back here
    journal = tmp_path / "j.db"
    common = ["--journal", str(journal), "--log-format", "json"]
    try:
        probe = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=5)
        probe.request("GET", "/")
        assert probe.getresponse().status == 401  # the gate is real: no credentials, no answer
        probe.close()
        logs = tmp_path / "run.log"
        with logs.open("w") as stderr:
            first = subprocess.Popen(cli("run", "--base-url", url, *common), env=env, stdout=stderr, stderr=stderr)
            wait_until(lambda: animals_in(journal, "posted") >= 100, 60, "posts", first)
            first.send_signal(signal.SIGTERM)  # a clean stop: the resume must bring the credentials back itself
            assert first.wait(timeout=60) == 130
        second = subprocess.run(cli("resume", *common, *resume_flags), env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
    finally:
        gate.close()

    assert gate.refused == 1 and gate.passed > 600  # every request of both attempts carried the credentials
    assert_exactly_once(sim)
    reports = [run_cli(capsys, command, "--json", "--journal", str(journal)) for command in ("status", "audit")]
    assert [code for code, _, _ in reports] == [0, 0]
    redacted = url if kind == "bearer-token" else f"http://{USER}:***@127.0.0.1:{gate.port}"
    assert json.loads(reports[0][1])["base_url"] == redacted
    places = {
        "run log": logs.read_text(),
        "resume log": second.stderr + second.stdout,
        "status --json": reports[0][1],
        "audit --json": reports[1][1],
        "journal file": b"".join(p.read_bytes() for p in tmp_path.glob("j.db*")).decode("latin-1"),
    }
    assert "run_started" in places["run log"] and "batch_posted" in places["resume log"]  # logs were written
    for place, text in places.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into the {place}"


def _authenticated_run(sim: Simulator, tmp_path: Path, monkeypatch, kind: str) -> tuple[Gatekeeper, Path, str]:
    """An authenticated run stopped before its first request, behind a gate that wants its credential."""
    if kind == "bearer-token":
        gate, token = Gatekeeper(sim, f"Bearer {TOKEN}"), TOKEN
        url = f"http://127.0.0.1:{gate.port}"
    else:
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        gate, token = Gatekeeper(sim, f"Basic {basic}"), None
        url = f"http://{USER}:{PASSWORD}@127.0.0.1:{gate.port}"
    journal = tmp_path / "j.db"
    stopped = threading.Event()
    stopped.set()
    assert start_run(settings(url, journal, token=token), stop=stopped).state == RunState.INTERRUPTED
    assert gate.passed == gate.refused == 0
    monkeypatch.delenv("ANIMAL_SYNC_TOKEN", raising=False)
    monkeypatch.delenv("ANIMAL_SYNC_BASE_URL", raising=False)
    return gate, journal, url


@pytest.mark.parametrize("kind", ["bearer-token", "url-password"])
def test_resuming_an_authenticated_run_without_its_credential_stops_before_sending_anything(
    simulator, tmp_path: Path, capsys, monkeypatch, kind: str
) -> None:
    sim = simulator(animals=100, strict=True)
    gate, journal, url = _authenticated_run(sim, tmp_path, monkeypatch, kind)
    try:
        seen = gate.passed, gate.refused
        attempts = query(journal, "SELECT attempts FROM runs")
        code, _, err = run_cli(capsys, "resume", "--journal", str(journal), "-q")
        assert code == 2
        assert_one_line(err, "the run was authenticated and the journal keeps no secret")
        assert "ANIMAL_SYNC_TOKEN" in err and "--base-url http://USER:PASSWORD@HOST" in err
        assert (gate.passed, gate.refused) == seen  # not one request, so no `keeper:***` went out as a password
        assert query(journal, "SELECT attempts FROM runs") == attempts  # the journal was left as it was

        if kind == "bearer-token":
            monkeypatch.setenv("ANIMAL_SYNC_TOKEN", TOKEN)  # the token comes back the way it came in
        else:
            monkeypatch.setenv("ANIMAL_SYNC_BASE_URL", url)  # and so does the password
        code, _, err = run_cli(capsys, "resume", "--journal", str(journal), "-q")
        assert code == 0, err
        assert gate.refused == seen[1] and gate.passed > seen[0]
    finally:
        gate.close()
    journal_bytes = b"".join(p.read_bytes() for p in tmp_path.glob("j.db*"))
    for secret in (TOKEN, PASSWORD):
        assert secret.encode() not in journal_bytes
    assert_exactly_once(sim)


@pytest.mark.parametrize("command", ["run", "resume"])
def test_an_api_refusing_the_credential_stops_with_exit_2_not_a_finished_run(
    simulator, tmp_path: Path, capsys, monkeypatch, command: str
) -> None:
    sim = simulator(animals=100, strict=True)
    gate, journal, _ = _authenticated_run(sim, tmp_path, monkeypatch, "bearer-token")
    try:
        monkeypatch.setenv("ANIMAL_SYNC_TOKEN", "not-the-token")
        args = ["--base-url", f"http://127.0.0.1:{gate.port}", "--abandon"] if command == "run" else []
        code, out, err = run_cli(capsys, command, "--journal", str(journal), "-q", *args)
    finally:
        gate.close()
    assert code == 2, err
    assert "refused the credential (HTTP 401" in err and err.count("\n") == 1 and "Traceback" not in err
    assert "0 animals posted" not in err
    [(state,)] = query(journal, "SELECT state FROM runs ORDER BY id DESC LIMIT 1")
    assert state == "interrupted"
    assert animals_in(journal, "failed") == 0  # no animal is blamed for the credential


def test_posts_refused_for_the_credential_stop_the_run_and_fail_no_animal(simulator, tmp_path: Path, capsys, monkeypatch) -> None:
    sim = simulator(animals=100, strict=True)
    gate = Gatekeeper(sim, f"Bearer {TOKEN}", post_status=403)
    journal = tmp_path / "j.db"
    monkeypatch.setenv("ANIMAL_SYNC_TOKEN", TOKEN)
    try:
        code, _, err = run_cli(
            capsys, "run", "--base-url", f"http://127.0.0.1:{gate.port}", "--journal", str(journal), "-q"
        )
    finally:
        gate.close()
    assert code == 2, err
    assert "refused the credential (HTTP 403" in err and err.count("\n") == 1
    assert animals_in(journal, "failed") == 0 and animals_in(journal, "posted") == 0
    assert query(journal, "SELECT count(*) FROM batches WHERE state = 'failed'") == [(0,)]
    assert query(journal, "SELECT state FROM runs") == [("interrupted",)]


@pytest.mark.slow
def test_sighup_stops_a_run_cleanly_and_audit_says_a_live_run_is_running(simulator, tmp_path: Path, capsys) -> None:
    sim = simulator(animals=2_000, strict=True)
    journal = tmp_path / "j.db"
    process = subprocess.Popen(
        cli("run", "--base-url", sim.url, "--journal", str(journal), "--log-format", "json", "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=CHILD_ENV,
    )
    try:
        wait_until(lambda: animals_in(journal, "posted") >= 100, 60, "posts", process)
        code, out, _ = run_cli(capsys, "audit", "--journal", str(journal))
        assert code == 1
        assert f"the run is still running (pid {process.pid})" in out and "animal-sync resume" not in out
        process.send_signal(signal.SIGHUP)  # the terminal it ran in was closed
        assert process.wait(timeout=60) == 130, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert "stopping after the POSTs in flight" in process.stderr.read()
    assert query(journal, "SELECT state FROM runs") == [("interrupted",)]
    code, out, _ = run_cli(capsys, "audit", "--journal", str(journal))
    assert f"the run is interrupted, not finished: run `animal-sync resume --journal {journal}`" in out
    assert run_cli(capsys, "resume", "--journal", str(journal), "-q")[0] == 0
    assert_exactly_once(sim)
