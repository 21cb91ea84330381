"""Logging: every event of a run names its run (and batch events their batch); lines go to the stderr of the moment."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from animal_sync.config import Settings
from animal_sync.logs import LogFormat, configure_logging, resolve_format
from animal_sync.engine.pipeline import RunOutcome, start_run


def test_every_run_event_carries_run_id_and_batch_events_batch_id(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=250, strict=True, faults={7: "html"})
    with capture_logs() as events:
        result = start_run(Settings(base_url=sim.url, journal=tmp_path / "j.db", batch_size=50))
    assert result.outcome is RunOutcome.EXCEPTIONS  # one quarantined animal
    assert events and all(event.get("run_id") == result.run_id for event in events)
    batch_events = [e for e in events if e["event"].startswith("batch_")]
    assert len(batch_events) == 5 and all(isinstance(e["batch_id"], int) for e in batch_events)
    assert {"run_started", "record_quarantined", "run_finished"} <= {e["event"] for e in events}


def test_lines_go_to_the_stderr_of_the_moment_not_the_one_at_configuration(monkeypatch) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(LogFormat.JSON)
    first.close()  # e.g. a test's captured stream, gone since
    monkeypatch.setattr(sys, "stderr", second)
    structlog.get_logger().bind(run_id=3).info("hello", n=1)
    line = json.loads(second.getvalue())
    assert line["event"] == "hello" and line["run_id"] == 3 and line["level"] == "info"


def test_quiet_keeps_warnings_only(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging(LogFormat.JSON, quiet=True)
    log = structlog.get_logger()
    log.info("chatter")
    log.warning("worth_knowing")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["worth_knowing"]


@pytest.mark.parametrize(("tty", "expected"), [(True, LogFormat.CONSOLE), (False, LogFormat.JSON)])
def test_auto_is_console_on_a_terminal_and_json_elsewhere(monkeypatch, tty: bool, expected: LogFormat) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    monkeypatch.setattr(sys, "stderr", Stream())
    assert resolve_format(LogFormat.AUTO) is expected
    assert resolve_format(LogFormat.JSON) is LogFormat.JSON
