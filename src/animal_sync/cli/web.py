"""`serve` (the live page, /metrics, the trigger) and the metrics options of `run` and `resume`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import DEFAULT_JOURNAL
from .options import JournalsOpt

__all__ = ["MetricsTextfileOpt", "PushgatewayOpt", "publish_metrics", "serve"]

TOKEN_VARIABLE = "ANIMAL_SYNC_SERVE_TOKEN"

PushgatewayOpt = Annotated[
    Optional[str],
    typer.Option(
        "--pushgateway", envvar="ANIMAL_SYNC_PUSHGATEWAY", metavar="URL",
        help="Push the run's metrics to this Prometheus Pushgateway when the attempt ends, stopped or not (job animal_sync, grouped by journal); a failed push is a warning.",
    ),
]
MetricsTextfileOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--metrics-textfile", envvar="ANIMAL_SYNC_METRICS_TEXTFILE", metavar="PATH",
        help="Write the run's metrics here when the attempt ends (atomically), for node_exporter's textfile collector (a .prom file).",
    ),
]


def publish_metrics(journal: Path, pushgateway: str | None, textfile: Path | None) -> None:
    """Push and write the journal's metrics as an attempt ends. A failure is one warning line, never the run's:
    the journal, not the monitoring, is the record of what was synced."""
    if pushgateway is None and textfile is None:
        return
    from ..web import push, write_textfile

    for what, publish, target in (
        ("push metrics to", push, pushgateway), ("write metrics to", write_textfile, textfile),
    ):
        if target is None:
            continue
        try:
            publish(journal, target)
        except Exception as exc:  # noqa: BLE001 - any failure of monitoring is a warning, by design
            reason = " ".join(str(exc).split()) or type(exc).__name__
            typer.echo(f"animal-sync: warning: could not {what} {target}: {reason}", err=True)


def serve(
    journal: JournalsOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on; loopback unless told otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")] = 8000,
    allow_trigger: Annotated[
        bool,
        typer.Option(
            "--allow-trigger",
            help=f"Enable POST /runs (start or resume a run as a child process); needs a token in {TOKEN_VARIABLE}, sent as `Authorization: Bearer TOKEN`.",
        ),
    ] = False,
    base_url: Annotated[
        Optional[str], typer.Option(envvar="ANIMAL_SYNC_BASE_URL", help="The Animals API for a run the trigger starts in a journal with no run yet.")
    ] = None,
    every: Annotated[float, typer.Option(min=1.0, help="Seconds between two updates of the page (at least 1).")] = 1.0,
) -> None:
    """Serve a live page over the journal(s): progress, animals by state, exceptions with their commands, recent
    events, an animals search, and /metrics for Prometheus. Read-only; with several journals (shards), their union."""
    from ..web import LOOPBACK_HOSTS, ServeConfig, listen, run_server

    token = os.environ.get(TOKEN_VARIABLE) or None
    if allow_trigger and (token is None or not token.strip()):
        raise typer.BadParameter(f"--allow-trigger needs a token: set {TOKEN_VARIABLE} (sent as `Authorization: Bearer TOKEN`)")
    journals = tuple(str(path) for path in (journal or [DEFAULT_JOURNAL]))
    loopback = host in LOOPBACK_HOSTS
    config = ServeConfig(
        journals=journals, every=every, token=token if allow_trigger else None, base_url=base_url,
        # On loopback only loopback names are answered: a web page elsewhere cannot reach in by DNS rebinding.
        allowed_hosts=("127.0.0.1", "localhost", "[::1]", "::1") if loopback else ("*",),
    )
    try:
        sock = listen(host, port)
    except OSError as exc:
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    run_server(config, sock, announce=lambda url: typer.echo(
        f"animal-sync serve on {url} ({', '.join(journals)}; trigger {'on' if config.token else 'off'}); Ctrl-C stops",
        err=True,
    ))
