"""Progress: figures as data, a periodic `progress` event off a terminal, live bars on one, nothing with --quiet."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import structlog
from rich.console import Console
from structlog.testing import capture_logs

from animal_sync.cli import main
from animal_sync.logs import LogFormat, configure_logging
from animal_sync.engine.pipeline import Progress
from animal_sync.cli.progress import (
    ProgressBars,
    ProgressLog,
    ProgressMode,
    choose_mode,
    expected_animals,
    figures,
    reporting,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("progress", "limit", "expected"),
    [
        (Progress(), None, None),  # page 1 has not answered yet
        (Progress(total_pages=10, pages_listed=2, discovered=20), None, 100),  # extrapolated per page
        (Progress(total_pages=10, pages_listed=10, discovered=95), None, 95),  # listing done: exact
        (Progress(total_pages=10, pages_listed=2, discovered=20), 50, 50),  # test mode caps it
        (Progress(total_pages=10, pages_listed=1, discovered=7), 5, 5),
        (Progress(), 30, 30),
    ],
)
def test_expected_animals(progress: Progress, limit: int | None, expected: int | None) -> None:
    assert expected_animals(progress, limit) == expected


def test_figures_are_plain_data() -> None:
    data = figures(Progress(total_pages=4, pages_listed=4, discovered=40, fetched=30, posted=20, unchanged=5, quarantined=1, failed=2, retries=3))
    assert data == {
        "total_pages": 4, "pages_listed": 4, "discovered": 40, "expected": 40, "fetched": 30,
        "posted": 20, "unchanged": 5, "quarantined": 1, "failed": 2, "retries": 3,
    }


@pytest.mark.parametrize(
    ("mode", "quiet", "terminal", "chosen"),
    [
        (ProgressMode.AUTO, False, True, ProgressMode.BARS),
        (ProgressMode.AUTO, False, False, ProgressMode.LOG),
        (ProgressMode.AUTO, True, True, ProgressMode.OFF),
        (ProgressMode.AUTO, True, False, ProgressMode.OFF),
        (ProgressMode.LOG, True, True, ProgressMode.LOG),  # asked for by name: --quiet only quiets the logs
        (ProgressMode.BARS, False, False, ProgressMode.BARS),
    ],
)
def test_choose_mode(mode: ProgressMode, quiet: bool, terminal: bool, chosen: ProgressMode) -> None:
    console = Console(file=io.StringIO(), force_terminal=terminal)
    assert choose_mode(mode, quiet=quiet, console=console) is chosen


def test_progress_log_emits_every_interval_with_rates_and_a_final_event() -> None:
    clock = Clock()
    reporter = ProgressLog(10.0, clock=clock)
    progress = Progress(run_id=7, total_pages=10, pages_listed=1, discovered=10)
    with capture_logs() as events:
        reporter(progress)  # the first figures start the clock: no event yet
        for _ in range(4):  # 4 s, below the interval
            clock.now += 1
            progress.fetched += 10
            reporter(progress)
        assert events == []
        clock.now += 6
        progress.pages_listed, progress.discovered, progress.fetched, progress.posted = 5, 50, 50, 40
        reporter(progress)
        clock.now += 10
        progress.pages_listed, progress.discovered, progress.posted = 10, 100, 80
        reporter(progress)
        clock.now += 1
        reporter.close()
    assert [e["event"] for e in events] == ["progress"] * 3
    first, second, final = events
    assert all(e["run_id"] == 7 and e["log_level"] == "info" for e in events)
    assert first["posted"] == 40 and first["post_rate"] == 4.0 and first["fetch_rate"] == 5.0
    assert first["expected"] == 100 and first["eta_seconds"] == 15  # 60 left at 4/s
    assert second["post_rate"] == 4.0 and second["eta_seconds"] == 5
    assert final["final"] is True and final["post_rate"] == round(80 / 21, 1)  # over the whole attempt


def test_progress_log_carries_the_run_id_and_ignores_quiet(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(LogFormat.JSON, quiet=True)
    clock = Clock()
    reporter = ProgressLog(1.0, clock=clock)
    reporter(Progress(run_id=42, discovered=5))
    clock.now += 2
    reporter(Progress(run_id=42, discovered=9))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["run_id"], line["discovered"]) for line in lines] == [("progress", 42, 9)]


def test_bars_draw_three_rows_and_log_lines_print_above_them(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    configure_logging(LogFormat.CONSOLE)
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    with ProgressBars(console) as bars:
        bars(Progress(total_pages=10, pages_listed=2, discovered=20, retries=3))
        structlog.get_logger().bind(run_id=1).info("batch_posted", batch_id=9)  # goes through Rich's proxy
        bars(Progress(total_pages=10, pages_listed=10, discovered=100, fetched=100, posted=100, quarantined=2))
    text = screen.getvalue()
    assert "pages listed" in text and "animals fetched" in text and "animals posted" in text
    assert "10/10" in text and "100/100" in text and "quarantined 2" in text and "retries 0" in text
    log_line = next(line for line in text.splitlines() if "batch_posted" in line)
    assert "batch_id=9" in log_line and "━" not in log_line  # a whole line of its own, not mixed into a bar


def test_reporting_gives_no_callback_when_off() -> None:
    with reporting(ProgressMode.OFF) as on_progress:
        assert on_progress is None


def test_cli_run_off_a_terminal_logs_progress_events_with_run_id(capsys, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=400, strict=True)
    journal = str(tmp_path / "j.db")
    code = main(["run", "--base-url", sim.url, "--journal", journal, "--log-format", "json", "--progress-every", "0.1",
                 "--workers", "2", "--post-workers", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) >= 2 and all(e["run_id"] == 1 for e in progress)
    assert progress[-1]["final"] is True and progress[-1]["posted"] == 400 and progress[-1]["eta_seconds"] == 0
    assert all(e["pages_listed"] <= e["total_pages"] for e in progress)


def test_cli_quiet_run_shows_no_progress(capsys, simulator, tmp_path: Path) -> None:
    sim = simulator(animals=50, strict=True)
    code = main(["run", "--base-url", sim.url, "--journal", str(tmp_path / "j.db"), "--quiet", "--progress-every", "0.1"])
    err = capsys.readouterr().err
    assert code == 0 and err == ""  # the closing line of a clean run goes to stdout


def test_the_ctrl_c_notice_goes_through_sys_stderr_so_it_prints_above_live_bars(monkeypatch, restore_signals) -> None:
    import signal

    from animal_sync.cli import stop_on_signals

    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with stop_on_signals() as signals:
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        signals.heed()
    assert signals.stop.is_set() and stream.getvalue() == "animal-sync: stopping after the POSTs in flight (again to quit at once)\n"


def test_bars_in_test_mode_count_the_pages_listed_as_all_of_them() -> None:
    screen = io.StringIO()
    with ProgressBars(Console(file=screen, force_terminal=True, width=120, color_system=None), limit=25) as bars:
        bars(Progress(total_pages=50, pages_listed=3, discovered=25, fetched=25, posted=25))
    assert "3/3" in screen.getvalue() and "25/25" in screen.getvalue()
