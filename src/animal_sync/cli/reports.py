"""The commands that read journals, read-only so they work beside a running sync: status, audit, export, report."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import DEFAULT_JOURNAL
from ..reports.formats import ExportFormat, Payload
from ..journal import AnimalState, Journal
from .options import JournalOpt, JournalsOpt, JsonOpt, RunOpt
from .suggest import invoked

__all__ = ["audit", "export", "report", "status"]


def _readonly(path: Path) -> Journal:
    """A journal opened read-only for the length of a report, so reports work beside a running sync."""
    return Journal.open(path, readonly=True)


def _several(journals: list[Path] | None, run_id: int | None, alone: str | None = None) -> list[Path]:
    """The journals a report reads (animal-sync.db when none is given); --run (and `alone`) need just one."""
    chosen = journals or [DEFAULT_JOURNAL]
    for flag in (alone, "--run" if run_id is not None else None):
        if flag and len(chosen) > 1:
            raise typer.BadParameter(f"{flag} reads one journal; with several, each one's last run is read")
    seen: dict[object, Path] = {}
    for path in chosen:  # ./X, a symlink or a hard link to X is X: its ids would be counted twice
        try:
            stat = path.stat()
            key: object = (stat.st_dev, stat.st_ino)
        except OSError:  # a journal that cannot be read is refused by its opening, in its own words
            key = path.resolve()
        if key in seen:
            which = str(path) if str(path) == str(seen[key]) else f"{seen[key]} and {path} are one file"
            raise typer.BadParameter(f"the same journal twice ({which}); give each journal once")
        seen[key] = path
    return chosen


@contextmanager
def _readonly_all(paths: list[Path]) -> Iterator[list[Journal]]:
    """Several journals opened read-only for the length of a report (the shards' union)."""
    with ExitStack() as stack:
        yield [stack.enter_context(_readonly(path)) for path in paths]


def status(
    journal: JournalsOpt = None,
    as_json: JsonOpt = False,
    run_id: RunOpt = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow a run in progress until it ends (Ctrl-C stops watching).")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between two redraws with --watch.")] = 2.0,
) -> None:
    """Report on the current or last run: states, retries, errors, throughput, what is left.

    With several journals (one per shard of `run --shard I/N`): each shard's run, the sums, the shards missing.
    """
    from rich.console import Console

    from .render import status_hints, status_table, union_status_table
    from ..reports.status import Status
    from ..reports.status import status as build_status
    from ..reports.union import union_status

    journals = _several(journal, run_id, "--watch" if watch else None)
    invoked(journals[0])
    if watch:
        if as_json:
            raise typer.BadParameter("--watch draws a table; use --json without it")
        from .watch import watch_status

        try:
            raise typer.Exit(watch_status(journals[0], interval=interval, run_id=run_id))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    with _readonly_all(journals) as opened:
        report = build_status(opened[0], run_id) if len(opened) == 1 else union_status(opened)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        Console().print(status_table(report) if isinstance(report, Status) else union_status_table(report))
        for line in status_hints(report) if isinstance(report, Status) else ():
            typer.echo(line)


def audit(journal: JournalsOpt = None, as_json: JsonOpt = False, run_id: RunOpt = None) -> None:
    """Prove every discovered animal was posted exactly once; exit 0 only when there is no exception. With several
    journals (one per shard), prove their union: all shards, and every id listed and posted exactly once across them."""
    from ..reports.audit import Audit
    from ..reports.audit import audit as build_audit
    from .render import render_audit, render_union_audit
    from ..reports.union import union_audit

    journals = _several(journal, run_id)
    invoked(journals[0])
    with _readonly_all(journals) as opened:
        report = build_audit(opened[0], run_id) if len(opened) == 1 else union_audit(opened)
    words = render_audit(report) if isinstance(report, Audit) else render_union_audit(report)
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else words)
    raise typer.Exit(0 if report.ok else 1)


def export(
    journal: JournalOpt = DEFAULT_JOURNAL,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="JSON lines, or CSV with the record's fields as columns.")] = ExportFormat.JSONL,
    what: Annotated[Payload, typer.Option("--what", help="The body as received, or the record as posted.")] = Payload.TRANSFORMED,
    state: Annotated[
        Optional[list[AnimalState]], typer.Option("--state", help="Only animals in this state (repeatable; default: all).")
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here (atomically) instead of stdout.")] = None,
    run_id: RunOpt = None,
) -> None:
    """Stream a run's animals from the journal as JSON lines or CSV, in constant memory."""
    from ..reports.export import export as export_records
    from ..reports.export import export_to_path

    with _readonly(journal) as opened:
        options = {"fmt": fmt, "what": what, "states": state or (), "run_id": run_id}
        if output is not None:
            count = export_to_path(opened, output, **options)
            typer.echo(f"exported {count} animals to {output}", err=True)
            return
        try:
            export_records(opened, sys.stdout, **options)
            sys.stdout.flush()
        except BrokenPipeError:  # `animal-sync export | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def report(
    html: Annotated[Path, typer.Option("--html", help="Write a self-contained HTML page here.")],
    journal: JournalOpt = DEFAULT_JOURNAL,
    run_id: RunOpt = None,
) -> None:
    """Write a run's report as one HTML page: summary, charts, retries and errors, the audit's exceptions."""
    from ..reports.html_report import write_html_report

    with _readonly(journal) as opened:
        data = write_html_report(opened, html, run_id)
    verdict = "audit OK" if data.audit.ok else f"audit NOT OK ({sum(data.audit.exception_counts.values())} exceptions)"
    typer.echo(f"wrote {html}: run {data.status.run_id} {data.status.state}, {verdict}")
