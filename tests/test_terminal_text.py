"""Text from the journal reaches a terminal as text: an ANSI or OSC escape (a settle reason, an upstream error, a
journal's name) is shown escaped by `status` and `audit`, and Rich markup in it is shown, never read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from animal_sync.journal import Journal, RunState
from animal_sync.transform import canonical_json, transform
from conftest import run_cli

# Retitles the terminal (OSC 0), clears it (CSI 2J), turns text red, hides a bidi override; then Rich markup.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u202e [/bold] [link=http://evil]x[/link]"
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\u202e [/bold] [link=http://evil]x[/link]"


def test_printable_escapes_controls_and_keeps_everything_else() -> None:
    from animal_sync.cli.terminal import printable  # here, so the old code fails this test, not the module's import

    assert printable(HOSTILE) == SHOWN
    assert printable("Ñandú 🐦 Straße, tab\there") == "Ñandú 🐦 Straße, tab\\x09here"
    assert printable("\x9b31m \x7f \x00") == "\\x9b31m \\x7f \\x00"


def build(path: Path) -> None:
    """A finished run: animals 1-2 in a batch left in doubt, animal 3 failed with an upstream answer holding escapes."""
    with Journal.open(path) as journal:
        run = journal.start_run({}, "http://127.0.0.1:9/\x1b[31m")
        with journal.transaction():
            journal.record_page(run.id, 1, [1, 2, 3], total_pages=1)
            for animal_id in (1, 2):
                raw = json.dumps({"id": animal_id, "name": HOSTILE, "born_at": None, "friends": ""})
                journal.record_fetched(run.id, animal_id, raw, canonical_json(transform(json.loads(raw))), attempts=1)
            journal.record_fetch_failed(run.id, 3, f"HTTP 500 after 10 retries: {HOSTILE}", attempts=11)
            batch = journal.batch(journal.create_batch(run.id, [1, 2]))
            journal.mark_withheld(batch)
            journal.mark_sending(journal.batch(batch.id))
            journal.mark_in_doubt(journal.batch(batch.id), "read timeout")
        journal.end_run(run.id, RunState.FINISHED, {"message": f"last words {HOSTILE}"})


@pytest.mark.parametrize("command", ["status", "audit"])
def test_status_and_audit_show_escapes_escaped_and_markup_as_text(capsys, tmp_path: Path, command: str) -> None:
    journal = tmp_path / "j.db"
    build(journal)
    code, out, err = run_cli(capsys, "settle", "1", "--delivered", "--reason", f"checked {HOSTILE}", "--journal", str(journal))
    assert code == 0, err
    code, out, err = run_cli(capsys, command, "--journal", str(journal))
    assert "Traceback" not in err and "MarkupError" not in err, err
    assert code == (0 if command == "status" else 1)
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    flat = "".join(out.split())  # the table may fold a long cell over lines
    assert "".join(f"checked {SHOWN}".split()) in flat  # the settle reason
    if command == "audit":
        assert "".join(f"HTTP 500 after 10 retries: {SHOWN}".split()) in flat  # the failed animal's reason
    else:
        assert "".join(f"last words {SHOWN}".split()) in flat and "127.0.0.1:9/\\x1b[31m" in flat


def test_the_union_of_journals_shows_their_names_escaped(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # short names, so the status table does not cut them
    first, second = Path("a.db"), Path("\x1b[7m[i].db")
    build(first)
    shutil.copyfile(first, second)
    for command in ("status", "audit"):
        code, out, err = run_cli(capsys, command, "--journal", str(first), "--journal", str(second))
        assert "Traceback" not in err and "\x1b" not in out and "\x07" not in out, (command, out, err)
        assert "\\x1b[7m[i]" in out and (command == "status" or "\\x1b[7m[i].db: shard 0/1" in out), (command, out)


def test_console_log_lines_show_upstream_text_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Held before: structlog's console renderer writes a value by its repr. Kept so a renderer change cannot lose it."""
    import io
    import sys

    import structlog

    from animal_sync.logs import LogFormat, configure_logging

    stream = io.StringIO()  # not a terminal: no colours of its own, so any ESC would be the upstream's
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(LogFormat.CONSOLE)
    structlog.get_logger().warning("retry_budget_exhausted", animal_id=3, reason=f"HTTP 500: {HOSTILE}")
    line = stream.getvalue()
    assert "\x1b" not in line and "\x07" not in line and "pwned" in line
