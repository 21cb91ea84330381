"""status as a table, and status --watch following a run that writes the journal at the same time."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from animal_sync.cli import main
from animal_sync.config import Settings
from animal_sync.journal import Journal
from animal_sync.engine.pipeline import RunOutcome, start_run
from animal_sync.cli.render import status_table
from animal_sync.reports.status import status
from animal_sync.reports.writer import WriterProcess, writer_process
from animal_sync.cli.watch import watch_status
from conftest import wait_until


def run_in_journal(path: Path) -> bool:
    """Whether the journal exists and holds a run yet (a run being created may not be readable for a moment)."""
    try:
        with Journal.open(path, readonly=True) as journal:
            return journal.last_run() is not None
    except Exception:
        return False


@pytest.mark.slow
def test_watch_follows_a_live_run_until_it_finishes(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=300, strict=True)
    path = tmp_path / "j.db"
    settings = Settings(base_url=sim.url, journal=path, workers=1, post_workers=1, batch_size=20)
    runner = threading.Thread(target=start_run, args=(settings,))
    runner.start()
    wait_until(lambda: path.exists() and run_in_journal(path), what="the run in the journal")
    screen = io.StringIO()
    code = watch_status(path, interval=0.05, console=Console(file=screen, width=120))
    runner.join(30)
    text = screen.getvalue()
    lines = [line for line in text.splitlines() if line.startswith("run 1 running:")]
    assert code == 0 and len(lines) >= 2, text
    posted = [int(line.split(" posted")[0].rsplit(" ", 1)[1]) for line in lines]
    assert posted == sorted(posted)  # it saw the run advance, step by step
    assert "run 1: finished" in text  # the closing table, not a line, ends it


def test_watch_redraws_in_place_on_a_terminal(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=40, strict=True)
    path = tmp_path / "j.db"
    assert start_run(Settings(base_url=sim.url, journal=path)).outcome is RunOutcome.CLEAN
    screen = io.StringIO()
    code = watch_status(path, interval=0.05, console=Console(file=screen, force_terminal=True, width=100))
    assert code == 0 and "run 1: finished" in screen.getvalue() and "running:" not in screen.getvalue()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_run_left_running_by_a_killed_process_is_named_and_ends_the_watch(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with Journal.open(path) as journal:
        journal.start_run({}, "http://127.0.0.1:9")  # running, as a SIGKILL leaves it
    with Journal.open(path, readonly=True) as journal:
        assert writer_process(journal) == WriterProcess(pid=None, alive=False)  # no writer left a pid
    path.with_name("j.db.lock").write_text(str(dead_pid()))
    screen = io.StringIO()
    slept: list[float] = []
    code = watch_status(path, interval=5, console=Console(file=screen, width=140), sleep=slept.append)
    assert code == 1 and slept == []
    assert "no live process is running it" in screen.getvalue() and "animal-sync resume" in screen.getvalue()
    with Journal.open(path, readonly=True) as journal:
        assert status(journal).process.alive is False


def test_a_stale_pid_that_names_a_live_process_is_not_a_live_writer(tmp_path: Path) -> None:
    """pid 1 always exists (in a container it is the entrypoint): only the writer's lock says a run is alive."""
    path = tmp_path / "j.db"
    with Journal.open(path) as journal:
        journal.start_run({}, "http://127.0.0.1:9")  # running, as a SIGKILL leaves it
    path.with_name("j.db.lock").write_text("1")  # as a killed writer left it, in a container
    with Journal.open(path, readonly=True) as journal:
        assert writer_process(journal) == WriterProcess(pid=1, alive=False)
    screen = io.StringIO()
    slept: list[float] = []
    code = watch_status(path, interval=5, console=Console(file=screen, width=140), sleep=slept.append)
    assert code == 1 and slept == []  # --watch returns at once instead of following a dead run for ever
    assert "no live process is running it" in screen.getvalue()
    assert main(["status", "--journal", str(path), "--json"]) == 0


HOLD = "import sys; from animal_sync.journal import Journal; j = Journal.open(sys.argv[1]); print('locked', flush=True); sys.stdin.read()"


def test_a_live_writer_counts_as_alive(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with Journal.open(path, readonly=True) as journal:
            assert writer_process(journal) == WriterProcess(pid=holder.pid, alive=True)
    finally:
        holder.kill()
        holder.wait()
    with Journal.open(path, readonly=True) as journal:  # killed: the kernel dropped its lock, its pid file stays
        assert writer_process(journal) == WriterProcess(pid=holder.pid, alive=False)


def test_status_table_rows(capsys, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=30, strict=True, faults={4: "html"})
    journal = tmp_path / "j.db"
    assert start_run(Settings(base_url=sim.url, journal=journal)).outcome is RunOutcome.EXCEPTIONS
    capsys.readouterr()
    code = main(["status", "--journal", str(journal)])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("run 1: finished")
    for row in (r"pages listed\s+3 of 3", r"animals\s+30 listed", r"quarantined\s+1\b", r"posted\s+29\b", r"posted\s+1\b"):
        assert re.search(row, out), row  # 29 animals posted, in 1 batch
    with Journal.open(journal, readonly=True) as opened:
        report = status(opened)
    assert report.process is None  # only a running run has a process to ask about
    console = Console(file=io.StringIO(), width=100, color_system=None, force_terminal=False)
    console.print(status_table(report))
    plain = console.file.getvalue()
    assert "\x1b[" not in plain and "pages listed" in plain and "last outcome" in plain


def test_cli_watch_on_a_finished_run_returns_at_once_and_refuses_json(capsys, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=20, strict=True)
    journal = str(tmp_path / "j.db")
    assert start_run(Settings(base_url=sim.url, journal=Path(journal))).outcome is RunOutcome.CLEAN
    assert main(["status", "--journal", journal, "--watch", "--interval", "0.1"]) == 0
    assert "run 1: finished" in capsys.readouterr().out
    code = main(["status", "--journal", journal, "--watch", "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "--watch" in err and err.count("\n") == 1
