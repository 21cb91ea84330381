"""The CLI's words: no command or flag named outside cli/, suggestions that run as printed, .env, first contact."""

from __future__ import annotations

import ast
import re
import shlex
import socket
from pathlib import Path

import pytest
import typer
from conftest import query, run_cli

import animal_sync
from animal_sync import contact
from animal_sync.cli import app

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
        if part in ("cli", "simulator"):
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


def test_every_suggestion_runs_as_printed_against_the_same_journal(
    capsys, simulator, tmp_path: Path, monkeypatch, restore_signals
) -> None:
    """Scenarios: an unreached API, a refused second run, an in-doubt finish, a stopped run's status and audit,
    a missing journal, a settle for re-send. Each suggestion is then run in a directory with no animal-sync.db."""
    monkeypatch.setattr(contact, "FIRST_CONTACT_SECONDS", 0.5)
    monkeypatch.chdir(tmp_path)
    sim = simulator(animals=300, strict=True)
    journal = str(tmp_path / "shelf" / "night.db")
    (tmp_path / "shelf").mkdir()
    said: list[str] = []

    def collect(*argv: str) -> int:
        code, out, err = run_cli(capsys, *argv)
        said.extend(SUGGESTION.findall(out + err))
        return code

    assert collect("run", "--journal", journal, "--base-url", f"http://127.0.0.1:{_free_port()}", "-q") == 1
    assert collect("status", "--journal", str(tmp_path / "shelf" / "none.db")) == 2  # missing: how to start one
    assert collect("run", "--journal", journal, "--base-url", sim.url, "--limit", "50", "-q") == 0
    with query_run_interrupted(journal):
        assert collect("run", "--journal", journal, "--base-url", sim.url, "-q") == 2  # refused: unfinished run
        assert collect("audit", "--journal", journal) == 1
    commands = sorted(set(said))
    assert any(c.startswith("animal-sync resume") for c in commands), commands
    assert any(c.startswith("animal-sync run") for c in commands), commands
    for suggestion in commands:
        argv = shlex.split(suggestion)[1:]
        assert "--journal" in argv or argv[0] == "simulate", suggestion
        if argv[0] == "run" and "--abandon" not in argv:
            continue  # the unreached URL: the same command again, still unreached
        code, out, err = run_cli(capsys, *argv)
        assert code in (0, 1), (suggestion, err)
        assert not (tmp_path / "animal-sync.db").exists(), suggestion
    print("\n".join(commands))


class query_run_interrupted:
    """Leave the journal's last run interrupted for the length of a `with` block, as a kill would."""

    def __init__(self, journal: str) -> None:
        self.journal = journal

    def __enter__(self) -> None:
        import sqlite3

        with sqlite3.connect(self.journal) as conn:
            conn.execute("UPDATE runs SET state = 'interrupted', finished_at = NULL")

    def __exit__(self, *exc: object) -> None:
        return None


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
