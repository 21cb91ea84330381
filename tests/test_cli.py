"""The CLI's contract: exit codes, one readable line per error, nothing written on a usage error."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest

from conftest import run_cli

from animal_sync.config import Settings
from animal_sync.engine.pipeline import RunOutcome, start_run


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--batch-size", "0"], "--batch-size must be between 1 and 100"),
        (["--batch-size", "101"], "--batch-size must be between 1 and 100"),
        (["--workers", "0"], "--workers must be between 1 and 256"),
        (["--workers", "many"], "Invalid value for '--workers'"),
        (["--base-url", "ftp://example.org"], "--base-url must be an http(s) URL"),
        (["--base-url", "localhost:3123"], "--base-url must be an http(s) URL"),
        (["--limit", "0"], "--limit must be 1 or more"),
        (["--get-timeout", "0"], "--get-timeout must be above 0"),
        (["--get-timeout", "nan"], "--get-timeout must be a finite number, not nan"),
        (["--get-timeout-floor", "0"], "--get-timeout-floor must be above 0"),
        (["--get-timeout-floor", "inf"], "--get-timeout-floor must be a finite number, not inf"),
        (["--post-timeout", "inf"], "--post-timeout must be a finite number, not inf"),
        (["--base-url", "http://127.0.0.1:99999"], "--base-url must have a port between 1 and 65535"),
        (["--base-url", "http://127.0.0.1:0"], "--base-url must have a port between 1 and 65535"),
        (["--base-url", "http://127.0.0.1:http"], "--base-url must have a port between 1 and 65535"),
        (["--base-url", "http://exa mple.org/"], "--base-url has a host name with characters a host cannot have"),
        (["--base-url", "http://bob:pw@exa mple.org/"], "'exa mple.org'"),
        (["--base-url", "http://[::1:3123/"], "--base-url must be an http(s) URL with a host"),
        (["--get-deadline", "0"], "--get-deadline must be a finite number of seconds above 0"),
        (["--get-deadline", "inf"], "--get-deadline must be a finite number of seconds above 0"),
        (["--get-deadline", "nan"], "--get-deadline must be a finite number of seconds above 0"),
        (["--no-such-flag"], "No such option: --no-such-flag"),
    ],
)
def test_bad_flags_give_one_line_exit_2_and_write_nothing(capsys, tmp_path: Path, flags: list[str], says: str) -> None:
    journal = tmp_path / "j.db"
    code, out, err = run_cli(capsys, "run", "--journal", str(journal), *flags)
    assert code == 2
    assert says in err and err.count("\n") == 1 and err.startswith("animal-sync: ")
    assert not journal.exists()


@pytest.mark.parametrize(
    ("prepare", "says"),
    [
        (lambda p: p.write_bytes(os.urandom(4096)), "is not a usable animal-sync journal"),
        (lambda p: sqlite3.connect(p).execute("CREATE TABLE t (x)").connection.commit(), "not an animal-sync journal"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["random-bytes", "other-sqlite", "directory"],
)
def test_a_broken_journal_gives_one_line_and_exit_2(capsys, tmp_path: Path, prepare, says: str) -> None:
    journal = tmp_path / "j.db"
    prepare(journal)
    for command in (["run", "--base-url", "http://127.0.0.1:9"], ["resume"]):
        code, _, err = run_cli(capsys, *command, "--journal", str(journal))
        assert code == 2 and says in err and err.count("\n") == 1


def test_missing_journal_directory_and_missing_report_journal(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "run", "--journal", str(tmp_path / "nope" / "j.db"))
    assert code == 2 and "does not exist" in err
    for command in ("status", "audit"):
        code, _, err = run_cli(capsys, command, "--journal", str(tmp_path / "absent.db"))
        assert code == 2 and "no journal at" in err and err.count("\n") == 1


def test_resume_without_a_run_says_how_to_start(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "resume", "--journal", str(tmp_path / "j.db"))
    assert code == 2 and "animal-sync run" in err


def test_run_status_audit_on_a_real_simulator(capsys, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=230, strict=True)
    journal = str(tmp_path / "j.db")

    code, _, err = run_cli(capsys, "run", "--base-url", sim.url, "--journal", journal, "--log-format", "json")
    assert code == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {"run_started", "batch_posted", "run_finished"} <= {e["event"] for e in events}
    assert all(e["run_id"] == 1 for e in events)
    assert sum(e["event"] == "batch_posted" for e in events) == 3  # one line per batch, never per animal

    code, out, _ = run_cli(capsys, "status", "--journal", journal, "--json")
    report = json.loads(out)
    assert code == 0 and report["state"] == "finished" and report["animals"]["posted"] == 230
    code, out, _ = run_cli(capsys, "status", "--journal", journal)
    assert "pages listed   23 of 23" in out

    code, out, _ = run_cli(capsys, "audit", "--journal", journal)
    assert code == 0 and "OK: every discovered animal was posted exactly once" in out

    code, _, err = run_cli(capsys, "resume", "--journal", journal)
    assert code == 0 and sim.verify()["posts"] == 3  # a finished clean run has nothing left to send


def test_audit_exits_1_and_lists_exceptions(capsys, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=30, strict=True, faults={7: "bad_born_at", 8: "html"})
    journal = str(tmp_path / "j.db")
    code, _, _ = run_cli(capsys, "run", "--base-url", sim.url, "--journal", journal, "--quiet")
    assert code == 1
    code, out, _ = run_cli(capsys, "audit", "--journal", journal, "--json")
    report = json.loads(out)
    assert code == 1 and report["exception_counts"] == {"quarantined": 2}
    reasons = {item["id"]: item["reason"] for item in report["exceptions"]["quarantined"]}
    assert "born_at" in reasons[7] and "not JSON" in reasons[8]


def test_limit_is_a_test_mode_that_syncs_only_the_first_n_animals(capsys, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=300, strict=True)
    journal = str(tmp_path / "j.db")
    code, out, err = run_cli(capsys, "run", "--base-url", sim.url, "--journal", journal, "--limit", "25", "--quiet")
    assert code == 0, err
    assert out == "run 1 finished: 25 animals posted\n"
    assert sim.verify()["delivered"] == 25

    code, out, _ = run_cli(capsys, "audit", "--journal", journal)
    assert code == 0 and "test mode: the run was limited to the first 25 animals listed" in out
    assert "OK: every discovered animal was posted exactly once" in out
    code, out, _ = run_cli(capsys, "audit", "--journal", journal, "--json")
    report = json.loads(out)
    assert report["limit"] == 25 and report["discovered"] == report["posted"] == 25 and report["exception_counts"] == {}


def test_dry_run_posts_nothing_and_the_audit_says_dry_run_not_failure(capsys, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=120, strict=True)
    journal = str(tmp_path / "j.db")
    code, out, err = run_cli(capsys, "run", "--base-url", sim.url, "--journal", journal, "--dry-run", "--quiet")
    assert code == 0, err
    assert "dry run: 120 animals fetched and transformed, none posted" in out
    assert sim.verify()["posts"] == 0

    code, out, _ = run_cli(capsys, "audit", "--journal", journal)
    assert code == 0 and "dry run: nothing was meant to be posted" in out and "exactly once" not in out
    assert out.splitlines()[-1].startswith("OK (dry run)")
    code, out, _ = run_cli(capsys, "status", "--journal", journal, "--json")
    report = json.loads(out)
    assert report["dry_run"] is True and report["animals"]["fetched"] == 120 and report["animals"]["posted"] == 0
    code, out, _ = run_cli(capsys, "status", "--journal", journal)
    assert out.startswith("run 1: finished (dry run)")
    code, out, _ = run_cli(capsys, "export", "--journal", journal, "--state", "fetched")
    assert len(out.splitlines()) == 120  # what would have been posted, for a person to check first


def test_a_second_signal_quits_at_once_and_says_what_it_leaves_in_doubt(capsys, monkeypatch, restore_signals) -> None:
    from animal_sync.cli import stop_on_signals

    def hard_exit(code: int) -> None:
        raise SystemExit(f"os._exit({code})")

    monkeypatch.setattr("animal_sync.cli.sync.os._exit", hard_exit)
    with stop_on_signals("batches then in flight will be in doubt: run `animal-sync resume`") as signals:
        handler = signal.getsignal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGHUP) is handler  # a closed terminal stops the run the same way
        handler(signal.SIGTERM, None)  # the first: finish the POSTs in flight, then stop
        assert not signals.stop.is_set() and capsys.readouterr().err == ""  # the handler only counts
        signals.heed()  # the main thread acts, and talks
        assert signals.stop.is_set() and "stopping after the POSTs in flight" in capsys.readouterr().err
        handler(signal.SIGINT, None)  # the second: now, without waiting for stalled POSTs
        assert capsys.readouterr().err == ""
        with pytest.raises(SystemExit, match=r"os\._exit\(130\)"):
            signals.heed()
        assert "in doubt: run `animal-sync resume`" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"os\._exit\(130\)"):  # after a stop, a later signal still ends in 130
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)


def test_a_run_gives_the_caller_its_signal_handlers_back(capsys, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=30)
    mine = {signum: (lambda *_: None) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    before = {signum: signal.signal(signum, handler) for signum, handler in mine.items()}
    try:
        code, _, err = run_cli(capsys, "run", "--base-url", sim.url, "--journal", str(tmp_path / "j.db"), "-q")
        assert code == 0, err
        assert {signum: signal.getsignal(signum) for signum in mine} == mine
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_good_hosts_pass_the_url_check() -> None:
    from animal_sync.config import Settings

    for url in ("http://[::1]:3123", "https://api.example.org", "http://my_host.local:8080/", "http://bücher.example"):
        assert Settings(base_url=url).base_url == url


def test_a_secret_is_not_echoed_in_a_url_error(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "run", "--journal", str(tmp_path / "j.db"), "--base-url", "http://bob:pw-9z@h:99999/")
    assert code == 2 and "pw-9z" not in err and "bob:***@h:99999" in err


def test_a_journal_holding_a_nan_setting_resumes_with_one_line(capsys, tmp_path: Path) -> None:
    from animal_sync.config import Settings
    from animal_sync.journal import Journal, RunState

    journal = tmp_path / "j.db"
    with Journal.open(journal) as opened:  # written by an animal-sync that let NaN through
        run = opened.start_run({**Settings(journal=journal).journaled(), "get_timeout": float("nan")}, "http://127.0.0.1:9")
        opened.end_run(run.id, RunState.INTERRUPTED, {})
    code, _, err = run_cli(capsys, "resume", "--journal", str(journal))
    assert code == 2 and err.count("\n") == 1 and err.startswith("animal-sync: ")
    assert "journaled settings cannot be used (--get-timeout must be a finite number, not nan)" in err


def test_a_journaled_setting_no_flag_sets_is_named_by_its_field(capsys, tmp_path: Path) -> None:
    from animal_sync.config import Settings
    from animal_sync.journal import Journal, RunState

    journal = tmp_path / "j.db"
    with Journal.open(journal) as opened:
        run = opened.start_run({**Settings(journal=journal).journaled(), "backoff": -1}, "http://127.0.0.1:9")
        opened.end_run(run.id, RunState.INTERRUPTED, {})
    code, _, err = run_cli(capsys, "resume", "--journal", str(journal))
    assert code == 2 and err.count("\n") == 1
    assert "journaled settings cannot be used (backoff must be 0 or more, not -1)" in err  # no --backoff flag exists


def test_resume_of_a_journal_that_is_not_there_creates_nothing(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "resume", "--journal", str(tmp_path / "typo.db"))
    typo = tmp_path / "typo.db"
    assert code == 2 and err == f"animal-sync: no journal at {typo}; start a run with `animal-sync run --journal {typo}`\n"
    assert list(tmp_path.iterdir()) == []  # no journal, no -wal/-shm, no .lock


def test_status_of_an_empty_file_says_it_holds_no_run_yet(capsys, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    journal.touch()
    for command in ("status", "audit"):
        code, _, err = run_cli(capsys, command, "--journal", str(journal))
        assert code == 2 and err.count("\n") == 1
        assert f"is empty: it holds no run yet; start a run with `animal-sync run --journal {journal}`" in err
        assert "resume" not in err


@pytest.fixture
def dry_journal(capsys, simulator, tmp_path: Path) -> Path:
    sim = simulator(animals=20)
    journal = tmp_path / "j.db"
    code, _, err = run_cli(capsys, "run", "--base-url", sim.url, "--journal", str(journal), "--dry-run", "-q")
    assert code == 0, err
    return journal


@pytest.mark.parametrize("where", ["missing-directory", "a-directory"])
@pytest.mark.parametrize("command", ["report", "export"])
def test_writing_a_report_or_export_where_it_cannot_go_is_one_line(capsys, dry_journal: Path, tmp_path: Path, command: str, where: str) -> None:
    target = tmp_path / "nope" / "out.x" if where == "missing-directory" else tmp_path
    flag = "--html" if command == "report" else "--output"
    code, out, err = run_cli(capsys, command, "--journal", str(dry_journal), flag, str(target))
    assert code == 2 and err.count("\n") == 1 and err.startswith("animal-sync: "), err
    assert str(target) in err and ("No such file or directory" in err or "directory" in err)
    assert not list(tmp_path.glob("**/*.partial"))


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_simulate_on_a_port_that_cannot_exist_is_one_line(capsys, port: str) -> None:
    code, _, err = run_cli(capsys, "simulate", "--port", port)
    assert code == 2 and err.count("\n") == 1 and "Invalid value for '--port'" in err


def test_status_and_report_show_the_api_the_last_attempt_used(capsys, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=40, strict=True)
    first = simulator(animals=40, strict=True)  # the same data set at another address
    gone = first.url
    journal = str(tmp_path / "j.db")
    stop = threading.Event()
    interrupted = start_run(
        Settings(base_url=gone, journal=Path(journal)), stop=stop, on_progress=lambda progress: stop.set()
    )
    assert interrupted.outcome is RunOutcome.STOPPED
    code, _, err = run_cli(capsys, "resume", "--journal", journal, "--base-url", sim.url, "-q")
    assert code == 0, err
    code, out, _ = run_cli(capsys, "status", "--journal", journal, "--json")
    report = json.loads(out)
    assert (report["base_url"], report["first_base_url"]) == (sim.url, gone)
    code, out, _ = run_cli(capsys, "status", "--journal", journal)
    assert f"API            {sim.url}" in out and f"API at start   {gone}" in out
    page = tmp_path / "r.html"
    assert run_cli(capsys, "report", "--journal", journal, "--html", str(page))[0] == 0
    assert f"<th>API</th><td>{sim.url}</td>" in page.read_text()


EXIT_CODES = {
    "clean": 0, "exceptions": 1, "upstream_changed": 1, "unreachable": 1, "check_failed": 1, "never_listed": 1,
    "empty_pages": 1,
    "credential_refused": 2, "stopped": 130,
}


@pytest.mark.parametrize(("outcome", "code"), EXIT_CODES.items())
def test_the_cli_decides_the_exit_code_from_the_run_s_outcome(outcome: str, code: int) -> None:
    from animal_sync.cli import exit_code
    from animal_sync.engine.pipeline import RunOutcome

    assert exit_code(RunOutcome(outcome)) == code


def test_the_exit_code_table_above_names_every_outcome() -> None:
    from animal_sync.engine.pipeline import RunOutcome

    assert set(EXIT_CODES) == {str(outcome) for outcome in RunOutcome}


@pytest.mark.parametrize(
    "command",
    [
        ["audit", "--run", "99999999999999999999"],
        ["status", "--run", "99999999999999999999"],
        ["export", "--run", "99999999999999999999"],
        ["settle", "99999999999999999999", "--delivered", "--reason", "checked"],
    ],
)
def test_an_id_beyond_any_the_journal_can_hold_is_one_line(capsys, tmp_path: Path, command: list[str]) -> None:
    from animal_sync.journal import Journal, RunState

    journal = tmp_path / "j.db"
    with Journal.open(journal) as opened:
        run = opened.start_run({}, "http://api.test")
        opened.end_run(run.id, RunState.FINISHED, {"message": "empty"})
    code, _, err = run_cli(capsys, *command, "--journal", str(journal))
    assert code == 2 and err.startswith("animal-sync: ") and err.count("\n") == 1 and "Traceback" not in err, err
