"""The CLI's contract: exit codes, one readable line per error, nothing written on a usage error."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from animal_sync.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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


def test_a_second_signal_quits_at_once_and_says_what_it_leaves_in_doubt(capsys, monkeypatch) -> None:
    from animal_sync.cli import _stop_on_signals

    def hard_exit(code: int) -> None:
        raise SystemExit(f"os._exit({code})")

    monkeypatch.setattr("animal_sync.cli.os._exit", hard_exit)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        stop = _stop_on_signals()
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)  # the first: finish the POSTs in flight, then stop
        assert stop.is_set() and "stopping after the POSTs in flight" in capsys.readouterr().err
        with pytest.raises(SystemExit, match=r"os\._exit\(130\)"):
            handler(signal.SIGINT, None)  # the second: now, without waiting for stalled POSTs
        assert "in doubt: run `animal-sync resume`" in capsys.readouterr().err
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
