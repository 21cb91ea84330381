"""The CLI's words: no command or flag named outside cli/, suggestions that run as printed, .env, first contact."""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import typer
from conftest import cli, copy_of, query, run_cli, tamper
from test_settle import lost_answer

import animal_sync
from animal_sync.engine import contact
from animal_sync.cli import app
from animal_sync.config import Settings
from animal_sync.engine.pipeline import RunOutcome, start_run
from animal_sync.simulator import Chaos, Simulator, SimulatorConfig

PACKAGE = Path(animal_sync.__file__).parent


def _cli_words() -> tuple[set[str], set[str]]:
    """The app's command names and long flags, read from the typer app itself."""
    root = typer.main.get_command(app)
    names = set(root.commands)  # type: ignore[attr-defined]
    flags = {
        opt for command in root.commands.values() for param in command.params  # type: ignore[attr-defined]
        for opt in (*param.opts, *getattr(param, "secondary_opts", ())) if opt.startswith("--") and opt != "--help"
    }
    return names, flags


def _spoken_strings(path: Path) -> list[tuple[int, str]]:
    """The string literals of a module that it may print or raise: every one but the docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_command_or_flag_of_the_cli_is_named_outside_cli() -> None:
    names, flags = _cli_words()
    command = re.compile(r"animal-sync (%s)\b(?! \d)" % "|".join(sorted(names)))  # not a title: "animal-sync run 3"
    flag = re.compile(r"(?<![\w-])(%s)(?![\w-])" % "|".join(re.escape(f) for f in sorted(flags, key=len, reverse=True)))
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).parts[0]
        if part in ("cli", "simulator", "web"):  # web/ is the other edge: it shows operators the commands to type
            continue
        for line, text in _spoken_strings(path):
            if text.endswith("animal-sync run "):  # the HTML page's title, "animal-sync run 3: finished"
                continue
            if command.search(text) or flag.search(text):
                found.append(f"{path.relative_to(PACKAGE)}:{line}: {text!r}")
    assert found == []


SUGGESTION = re.compile(r"`(animal-sync [^`]+)`")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _runs(journal: Path) -> tuple[object, ...]:
    """What a command that acts on a journal changes: its runs, their states and attempts, its settlements."""
    return (
        query(journal, "SELECT id, state, attempts FROM runs ORDER BY id"),
        query(journal, "SELECT count(*) FROM settlements"),
    )


def _interrupt_when_posting(journal: Path) -> threading.Thread:
    """Ctrl-C, sent to this process once the run in it has posted a batch: the CLI's handler takes it."""

    def send() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if query(journal, "SELECT count(*) FROM animals WHERE state = 'posted'")[0][0] >= 100:
                    break
            except (sqlite3.Error, IndexError):  # not created yet
                pass
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_every_suggestion_runs_as_printed_against_the_same_journal(
    capsys, simulator, tmp_path: Path, monkeypatch, restore_signals
) -> None:
    """Every command the CLI suggests, collected across scenarios (an API never reached, a missing journal, a run
    stopped by Ctrl-C, the refused new run, status of a run whose process died, audit of an unfinished run, a
    finish with a batch in doubt, a settle for re-send, an upstream that changed under a resume), then each run as
    printed, from a directory holding no journal: it must act on the journal of the command that printed it."""
    monkeypatch.setattr(contact, "FIRST_CONTACT_SECONDS", 0.5)
    home = tmp_path / "cwd"
    home.mkdir()
    monkeypatch.chdir(home)
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    said: list[tuple[str, Path]] = []

    def collect(journal: Path, *argv: str) -> int:
        code, out, err = run_cli(capsys, *argv)
        said.extend((found, journal) for found in SUGGESTION.findall(out + err))
        return code

    # An API never reached: the same run again, once it answers.
    port = _free_port()
    unreached = shelf / "unreached.db"
    assert collect(unreached, "run", "--journal", str(unreached), "--base-url", f"http://127.0.0.1:{port}", "-q") == 1
    # A missing journal: how to start one.
    missing = shelf / "missing.db"
    assert collect(missing, "status", "--journal", str(missing)) == 2
    # A run stopped by Ctrl-C; the new run refused; audit of it unfinished; status as a dead writer leaves it.
    sim = simulator(animals=3_000, strict=True)
    stopped = shelf / "stopped.db"
    sender = _interrupt_when_posting(stopped)
    assert collect(stopped, "run", "--journal", str(stopped), "--base-url", sim.url, "-q") == 130
    sender.join()
    changed = copy_of(stopped, tmp_path)  # for the upstream that changes under a resume, below
    assert collect(stopped, "run", "--journal", str(stopped), "--base-url", sim.url, "-q") == 2
    assert collect(stopped, "audit", "--journal", str(stopped)) == 1
    tamper(stopped, "UPDATE runs SET state = 'running'")  # as a SIGKILL leaves it
    assert collect(stopped, "status", "--journal", str(stopped)) == 0
    tamper(stopped, "UPDATE runs SET state = 'interrupted'")
    # An upstream that changed under a resume.
    other = simulator(animals=3_000, seed=2, strict=True)
    assert collect(changed, "resume", "--journal", str(changed), "--base-url", other.url, "-q") == 1
    # A finish with a batch in doubt (held), then a settle for re-send.
    _, doubted = lost_answer(simulator, shelf, delivered=False)
    assert collect(doubted, "resume", "--journal", str(doubted), "--hold-in-doubt", "-q") == 1
    assert collect(doubted, "settle", "1", "--resend", "--reason", "lost", "--journal", str(doubted)) == 0

    suggestions = sorted(set(said))
    printed = {text for text, _ in suggestions}
    for expected in (
        f"animal-sync run --journal {unreached} --base-url http://127.0.0.1:{port} -q",
        f"animal-sync run --journal {missing}",
        f"animal-sync resume --journal {stopped}",
        f"animal-sync run --journal {stopped} --base-url {sim.url} -q --abandon",
        f"animal-sync audit --journal {doubted}",
        f"animal-sync resume --journal {doubted}",
        "animal-sync settle --help",
        f"animal-sync run --abandon --journal {changed} --base-url {other.url}",
        f"animal-sync resume --journal {changed}",
    ):
        assert expected in printed, (expected, sorted(printed))

    monkeypatch.setenv("ANIMAL_SYNC_BASE_URL", sim.url)  # the missing journal's `run` goes to the API set up here
    (tmp_path / "as-printed").mkdir()
    with Simulator(SimulatorConfig(port=port, animals=50, chaos=0)):  # the unreached API answers now
        for text, journal in suggestions:
            argv = shlex.split(text)[1:]
            before = _runs(journal) if journal.exists() else None
            kept = copy_of(journal, tmp_path / "as-printed") if journal.exists() else None
            code, out, err = run_cli(capsys, *argv)
            assert code in (0, 1), (text, out, err)
            assert not (home / "animal-sync.db").exists(), text  # never the default journal
            if argv[0] in ("status", "audit"):
                assert f"run {_runs(journal)[0][-1][0]}" in out, (text, out)
            elif argv[0] != "settle":
                assert journal.exists() and _runs(journal) != before, text  # it acted on this journal
            if kept is not None:  # the next suggestion meets the journal as it was when it was printed
                shutil.move(kept, journal)
    print("\n".join(sorted(printed)))


def test_dotenv_is_read_for_animal_sync_variables_and_flags_and_environment_beat_it(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANIMAL_SYNC_JOURNAL", raising=False)
    (tmp_path / ".env").write_text("ANIMAL_SYNC_JOURNAL=from-dotenv.db\nOTHER=1\n")
    code, _, err = run_cli(capsys, "status")
    assert code == 2 and "no journal at from-dotenv.db" in err
    monkeypatch.setenv("ANIMAL_SYNC_JOURNAL", "from-env.db")
    assert "no journal at from-env.db" in run_cli(capsys, "status")[2]
    assert "no journal at from-flag.db" in run_cli(capsys, "status", "--journal", "from-flag.db")[2]
    monkeypatch.delenv("ANIMAL_SYNC_JOURNAL")
    run_cli(capsys, "status")
    import os

    assert "ANIMAL_SYNC_JOURNAL" not in os.environ and "OTHER" not in os.environ  # left as it was


def test_an_api_never_reached_is_said_so_at_once_and_begins_no_run(capsys, simulator, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(contact, "FIRST_CONTACT_SECONDS", 1.0)
    port = _free_port()
    journal = str(tmp_path / "j.db")
    code, _, err = run_cli(capsys, "run", "--journal", journal, "--base-url", f"http://127.0.0.1:{port}", "-q")
    lines = err.splitlines()
    assert code == 1 and lines[0].startswith(f"animal-sync: could not reach the Animals API at http://127.0.0.1:{port} (connection refused); trying again for")
    assert "stopped answering" not in err and "nothing was started" in lines[-1]
    assert f"`animal-sync run --journal {journal} --base-url http://127.0.0.1:{port} -q`" in lines[-1]  # as typed
    assert query(Path(journal), "SELECT count(*) FROM runs") == [(0,)]
    sim = simulator(animals=30)
    assert run_cli(capsys, "run", "--journal", journal, "--base-url", sim.url, "-q")[0] == 0  # nothing blocks it


def test_help_shows_flags_as_flags_and_version_and_h_work(capsys) -> None:
    code, out, _ = run_cli(capsys, "audit", "-h")
    assert code == 0 and "<bool>" not in out and "--json " in out
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("animal-sync ")
    code, out, _ = run_cli(capsys, "simulate", "--help")
    assert "bad_born_at, friends_type" in " ".join(out.split()) and "see the docs" not in out
    code, _, err = run_cli(capsys, "run", "--dry-run", "true")
    assert code == 2 and "--dry-run is a flag and takes no value" in err


def test_every_stop_signal_ends_in_130_a_second_sigterm_included(simulator, tmp_path: Path) -> None:
    """First SIGTERM: stop after the POSTs in flight (one is stalled); the second: quit at once, still 130, the
    main thread saying what to type next (the handler itself only counts)."""
    sim = simulator(animals=2_000, strict=True, stall_min=20, stall_max=20)
    sim.queue_chaos(Chaos.STALL, method="POST")
    journal = tmp_path / "j.db"
    process = subprocess.Popen(
        cli("run", "--base-url", sim.url, "--journal", str(journal), "--quiet", "--post-timeout", "60"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while sim.stalled_requests == 0:
            assert process.poll() is None and time.monotonic() < deadline, "no POST stalled"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None  # waiting for the stalled POST
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 130
    finally:
        if process.poll() is None:
            process.kill()
    err = process.stderr.read()
    assert "stopping after the POSTs in flight (again to quit at once)" in err
    assert f"quitting at once; batches then in flight will be in doubt: run `animal-sync resume --journal {journal}`" in err
    assert "reentrant" not in err and "Traceback" not in err


def test_a_resume_that_never_reaches_its_api_resumes_nothing_and_names_the_resume_to_type(
    capsys, simulator, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(contact, "FIRST_CONTACT_SECONDS", 0.5)
    sim = simulator(animals=40, strict=True)
    journal = tmp_path / "j.db"
    stop = threading.Event()
    stop.set()
    assert start_run(Settings(base_url=sim.url, journal=journal), stop=stop).outcome is RunOutcome.STOPPED
    before = query(journal, "SELECT state, attempts FROM runs")
    wrong = f"http://127.0.0.1:{_free_port()}"
    code, _, err = run_cli(capsys, "resume", "--journal", str(journal), "--base-url", wrong, "-q")
    assert code == 1 and "nothing was resumed" in err and "stopped answering" not in err
    assert f"`animal-sync resume --journal {journal} --base-url {wrong} -q`" not in err  # only a run keeps its flags
    assert f"`animal-sync resume --journal {journal} --base-url {wrong}`" in err
    assert query(journal, "SELECT state, attempts FROM runs") == before
    assert run_cli(capsys, "resume", "--journal", str(journal), "--base-url", sim.url, "-q")[0] == 0


def test_a_missing_journal_says_how_to_start_one_and_a_taken_port_suggests_port(capsys, tmp_path: Path) -> None:
    for command in ("status", "audit"):
        code, _, err = run_cli(capsys, command, "--journal", str(tmp_path / "absent.db"))
        assert code == 2 and err == (
            f"animal-sync: no journal at {tmp_path / 'absent.db'}; start a run with"
            f" `animal-sync run --journal {tmp_path / 'absent.db'}`\n"
        )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(capsys, "simulate", "--port", str(port))
    assert code == 2 and f"port {port} on 127.0.0.1 is already in use; choose another with --port" in err
    assert "`animal-sync simulate --port 0`" in err
