"""structlog set-up: readable lines on a terminal, JSON lines for log shippers; always on stderr."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum

import structlog

__all__ = ["LogFormat", "configure_logging"]


class LogFormat(StrEnum):
    AUTO = "auto"  # console on a terminal, JSON otherwise (cron, Kubernetes)
    CONSOLE = "console"
    JSON = "json"


def configure_logging(fmt: LogFormat = LogFormat.AUTO, *, quiet: bool = False) -> None:
    """Configure once per process; `quiet` keeps warnings and errors only."""
    if fmt is LogFormat.AUTO:
        fmt = LogFormat.CONSOLE if sys.stderr.isatty() else LogFormat.JSON
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
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
