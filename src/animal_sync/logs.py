"""structlog set-up: readable lines on a terminal, JSON lines for log shippers; always on stderr."""

from __future__ import annotations

import logging
import sys
import threading
from enum import StrEnum
from typing import Any

import structlog

__all__ = ["LogFormat", "StderrLogger", "configure_logging", "resolve_format"]


class LogFormat(StrEnum):
    AUTO = "auto"  # console on a terminal, JSON otherwise (cron, Kubernetes)
    CONSOLE = "console"
    JSON = "json"


class StderrLogger:
    """Writes each rendered line, whole, to whatever `sys.stderr` is at that moment.

    Looking stderr up per line (not once at set-up) is what lets live progress bars take it over: Rich's
    Live swaps `sys.stderr` for a proxy that prints above the bars, so lines and bars never garble each
    other. It also keeps a logger configured under one captured stream from writing to a closed one later.
    """

    _lock = threading.RLock()  # one line at a time, whichever thread logs (re-entrant: a signal handler may log)

    def msg(self, message: str) -> None:
        with self._lock:
            stream = sys.stderr
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


def _stderr_logger(*args: Any) -> StderrLogger:
    return StderrLogger()


def resolve_format(fmt: LogFormat) -> LogFormat:
    """AUTO becomes CONSOLE on a terminal and JSON anywhere else (cron, CI, a pipe, Kubernetes)."""
    if fmt is LogFormat.AUTO:
        return LogFormat.CONSOLE if sys.stderr.isatty() else LogFormat.JSON
    return fmt


def configure_logging(fmt: LogFormat = LogFormat.AUTO, *, quiet: bool = False) -> None:
    """Configure once per process; `quiet` keeps warnings and errors only."""
    fmt = resolve_format(fmt)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt is LogFormat.JSON
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    # urllib3 logs every retry as a stdlib warning; retries are counted in the journal and shown by `status`.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING if quiet else logging.INFO),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
