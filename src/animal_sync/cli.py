"""The `animal-sync` command line: options in, library calls out, exit codes back. No logic lives here.

Exit codes: 0 finished and clean; 1 finished (or stopped) with failed, quarantined, in-doubt or missing
animals; 2 a usage or journal error, always as one line, or a credential the API refused; 130 stopped by
Ctrl-C, SIGTERM or SIGHUP.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperOption
from typer.exceptions import TyperException

from .config import DEFAULT_BASE_URL, DEFAULT_JOURNAL, Settings
from .errors import AnimalSyncError, ConfigError, CredentialMissing
from .export import ExportFormat, Payload
from .journal import AnimalState, Journal
from .logs import LogFormat, configure_logging
from .progress import DEFAULT_EVERY, OnProgress, ProgressMode
from .shards import Shard

if TYPE_CHECKING:
    from .pipeline import RunOutcome, RunResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Move every animal from the Animals API to its home endpoint, exactly once, with proof.",
)

JournalOpt = Annotated[Path, typer.Option("--journal", envvar="ANIMAL_SYNC_JOURNAL", help="The SQLite journal file.")]
JournalsOpt = Annotated[
    Optional[list[Path]],
    typer.Option(
        "--journal", envvar="ANIMAL_SYNC_JOURNAL", show_default=False, metavar="<path>",
        help="The SQLite journal file (default: animal-sync.db); repeat it to report on the union of shard journals.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
RunOpt = Annotated[Optional[int], typer.Option("--run", help="Report on this run id instead of the last one.")]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option("--log-format", envvar="ANIMAL_SYNC_LOG_FORMAT", help="auto: console on a terminal, JSON lines otherwise."),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", envvar="ANIMAL_SYNC_QUIET", help="Log warnings and errors only, and show no progress.")
]
ProgressOpt = Annotated[
    ProgressMode,
    typer.Option(
        "--progress", envvar="ANIMAL_SYNC_PROGRESS",
        help="auto: live bars on a terminal, a `progress` log event every --progress-every seconds otherwise, none with --quiet.",
    ),
]
ProgressEveryOpt = Annotated[
    float,
    typer.Option("--progress-every", min=0.1, envvar="ANIMAL_SYNC_PROGRESS_EVERY", help="Seconds between `progress` log events."),
]
HoldOpt = Annotated[
    bool,
    typer.Option(
        "--hold-in-doubt",
        envvar="ANIMAL_SYNC_HOLD_IN_DOUBT",
        help="Do not re-send batches whose POST outcome is unknown; leave them for a person to decide.",
    ),
]


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal was closed


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """First Ctrl-C, SIGTERM or SIGHUP: finish in-flight POSTs and stop cleanly. Second: quit at once.

    The handlers last for the `with` block only: a library caller gets its own handlers back.
    """
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            # At once means not waiting for stalled POSTs in worker threads. The journal is consistent at every
            # commit, as after a SIGKILL (which the tests prove safe): the batches in flight come back in doubt.
            print(
                "animal-sync: quitting at once; batches then in flight will be in doubt: run `animal-sync resume`",
                file=sys.stderr, flush=True,
            )
            os._exit(130)
        stop.set()
        # print, not typer.echo: click writes to the stream under sys.stderr, past the proxy that keeps bars whole.
        print("animal-sync: stopping after the POSTs in flight (again to quit at once)", file=sys.stderr, flush=True)

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before if before is not None else signal.SIG_DFL)  # None: set outside Python


def _readonly(path: Path) -> Journal:
    """A journal opened read-only for the length of a report, so reports work beside a running sync."""
    return Journal.open(path, readonly=True)


def _several(journals: list[Path] | None, run_id: int | None, alone: str | None = None) -> list[Path]:
    """The journals a report reads (animal-sync.db when none is given); --run (and `alone`) need just one."""
    chosen = journals or [DEFAULT_JOURNAL]
    for flag in (alone, "--run" if run_id is not None else None):
        if flag and len(chosen) > 1:
            raise typer.BadParameter(f"{flag} reads one journal; with several, each one's last run is read")
    return chosen


@contextmanager
def _readonly_all(paths: list[Path]) -> Iterator[list[Journal]]:
    """Several journals opened read-only for the length of a report (the shards' union)."""
    with ExitStack() as stack:
        yield [stack.enter_context(_readonly(path)) for path in paths]


def _progress(mode: ProgressMode, quiet: bool, every: float, limit: int | None = None) -> AbstractContextManager[OnProgress | None]:
    """The `on_progress` callback to hand the pipeline, live for the length of a `with` block."""
    from rich.console import Console

    from .progress import choose_mode, reporting

    console = Console(stderr=True)
    chosen = choose_mode(mode, quiet=quiet, console=console)
    return reporting(chosen, console=console, every=every, limit=limit)


def exit_code(outcome: RunOutcome) -> int:
    """The shell's word for how an attempt ended: 0 clean, 2 a credential to fix first, 130 stopped, else 1."""
    from .pipeline import RunOutcome

    if outcome is RunOutcome.CLEAN:
        return 0
    if outcome is RunOutcome.CREDENTIAL_REFUSED:  # a usage error: nothing passes until the credential changes
        return 2
    if outcome is RunOutcome.STOPPED:
        return 130
    return 1


def _sync(attempt: Callable[..., RunResult], progress: AbstractContextManager[OnProgress | None]) -> None:
    """Run one attempt (`start_run` or `resume_run`) with signals and progress wired, then exit with its code."""
    with stop_on_signals() as stop, progress as on_progress:
        result = attempt(stop=stop, on_progress=on_progress)
    code = exit_code(result.outcome)
    typer.echo(f"run {result.run_id} {result.state}: {result.message}", err=code != 0)
    raise typer.Exit(code)


@app.command()
def run(
    base_url: Annotated[str, typer.Option(envvar="ANIMAL_SYNC_BASE_URL", help="The Animals API.")] = DEFAULT_BASE_URL,
    journal: JournalOpt = DEFAULT_JOURNAL,
    workers: Annotated[int, typer.Option(envvar="ANIMAL_SYNC_WORKERS", help="Concurrent GETs.")] = Settings.workers,
    post_workers: Annotated[int, typer.Option(envvar="ANIMAL_SYNC_POST_WORKERS", help="Concurrent POSTs.")] = Settings.post_workers,
    batch_size: Annotated[int, typer.Option(envvar="ANIMAL_SYNC_BATCH_SIZE", help="Animals per POST (at most 100).")] = Settings.batch_size,
    retries: Annotated[int, typer.Option(envvar="ANIMAL_SYNC_RETRIES", help="Retries per request.")] = Settings.retries,
    get_timeout: Annotated[float, typer.Option(envvar="ANIMAL_SYNC_GET_TIMEOUT", help="GET read timeout, s: a stalled GET is re-sent after it.")] = Settings.get_timeout,
    get_timeout_floor: Annotated[float, typer.Option(envvar="ANIMAL_SYNC_GET_TIMEOUT_FLOOR", help="The GET read timeout adapts to 4x the p99 of answers seen, never below this, s (= --get-timeout: fixed).")] = Settings.get_timeout_floor,
    get_deadline: Annotated[float, typer.Option(envvar="ANIMAL_SYNC_GET_DEADLINE", help="Whole-answer limit of one GET try, s: an answer that trickles is re-sent after it.")] = Settings.get_deadline,
    post_timeout: Annotated[float, typer.Option(envvar="ANIMAL_SYNC_POST_TIMEOUT", help="POST read timeout, s: keep it above the API's longest stall.")] = Settings.post_timeout,
    limit: Annotated[Optional[int], typer.Option(envvar="ANIMAL_SYNC_LIMIT", help="Sync only the first N animals listed.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", envvar="ANIMAL_SYNC_DRY_RUN", help="List, fetch, transform and journal; post nothing.")] = False,
    incremental: Annotated[bool, typer.Option("--incremental", envvar="ANIMAL_SYNC_INCREMENTAL", help="Post only animals new or changed since the journal's earlier finished runs against this API; journal the rest `unchanged`.")] = False,
    shard: Annotated[Optional[str], typer.Option(envvar="ANIMAL_SYNC_SHARD", metavar="I/N", help="Sync only shard I of N (0-based): pages p with (p-1) % N == I, in this shard's own journal.")] = None,
    abandon: Annotated[bool, typer.Option("--abandon", help="Abandon the journal's unfinished run and start a new one.")] = False,
    hold_in_doubt: HoldOpt = False,
    log_format: LogFormatOpt = LogFormat.AUTO,
    quiet: QuietOpt = False,
    progress: ProgressOpt = ProgressMode.AUTO,
    progress_every: ProgressEveryOpt = DEFAULT_EVERY,
) -> None:
    """Start a new sync run (the bearer token, if any, comes from ANIMAL_SYNC_TOKEN)."""
    from .pipeline import start_run

    settings = Settings(
        base_url=base_url, journal=journal, workers=workers, post_workers=post_workers, batch_size=batch_size,
        retries=retries, get_timeout=get_timeout, get_timeout_floor=get_timeout_floor, get_deadline=get_deadline,
        post_timeout=post_timeout, limit=limit, dry_run=dry_run, incremental=incremental, resend_in_doubt=not hold_in_doubt, token=os.environ.get("ANIMAL_SYNC_TOKEN") or None,
        shard=None if shard is None else Shard.parse(shard),
    )
    configure_logging(log_format, quiet=quiet)
    _sync(lambda **live: start_run(settings, abandon=abandon, **live), _progress(progress, quiet, progress_every, limit))


@app.command()
def resume(
    journal: JournalOpt = DEFAULT_JOURNAL,
    hold_in_doubt: HoldOpt = False,
    base_url: Annotated[
        Optional[str], typer.Option(envvar="ANIMAL_SYNC_BASE_URL", help="Override the journaled URL (e.g. to pass a password again).")
    ] = None,
    log_format: LogFormatOpt = LogFormat.AUTO,
    quiet: QuietOpt = False,
    progress: ProgressOpt = ProgressMode.AUTO,
    progress_every: ProgressEveryOpt = DEFAULT_EVERY,
) -> None:
    """Continue the last unfinished run from the journal alone (the token, if any, again from ANIMAL_SYNC_TOKEN); in-doubt batches are re-sent unless held."""
    from .pipeline import resume_run

    configure_logging(log_format, quiet=quiet)
    overrides = {
        "resend_in_doubt": not hold_in_doubt,
        "token": os.environ.get("ANIMAL_SYNC_TOKEN") or None,
        "base_url": base_url,
    }
    _sync(lambda **live: resume_run(journal, overrides=overrides, **live), _progress(progress, quiet, progress_every))


@app.command()
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

    from .render import status_table, union_status_table
    from .status import Status
    from .status import status as build_status
    from .union import union_status

    journals = _several(journal, run_id, "--watch" if watch else None)
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


@app.command()
def audit(journal: JournalsOpt = None, as_json: JsonOpt = False, run_id: RunOpt = None) -> None:
    """Prove every discovered animal was posted exactly once; exit 0 only when there is no exception. With several
    journals (one per shard), prove their union: all shards, and every id listed and posted exactly once across them."""
    from .audit import Audit
    from .audit import audit as build_audit
    from .render import render_audit, render_union_audit
    from .union import union_audit

    with _readonly_all(_several(journal, run_id)) as opened:
        report = build_audit(opened[0], run_id) if len(opened) == 1 else union_audit(opened)
    words = render_audit(report) if isinstance(report, Audit) else render_union_audit(report)
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else words)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def settle(
    batch_ids: Annotated[Optional[list[int]], typer.Argument(metavar="BATCH_ID", help="In-doubt batches to settle.", show_default=False)] = None,
    delivered: Annotated[bool, typer.Option("--delivered", help="A person judges the batches delivered: they leave doubt for good.")] = False,
    resend: Annotated[bool, typer.Option("--resend", help="A person judges them not delivered: the next resume sends them, even with --hold-in-doubt.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why, in words a colleague can check later (required; journaled with your user name and the time).")] = "",
    all_in_doubt: Annotated[bool, typer.Option("--all-in-doubt", help="Settle every in-doubt batch of the run instead of naming them.")] = False,
    journal: JournalOpt = DEFAULT_JOURNAL,
    run_id: Annotated[Optional[int], typer.Option("--run", help="Settle batches of this run id instead of the last one.")] = None,
) -> None:
    """Decide about batches whose POST outcome is unknown: delivered, or to be sent again. Needs the journal to itself."""
    from .journal import Decision
    from .settle import open_for_settling
    from .settle import settle as settle_batches

    if delivered == resend:
        raise typer.BadParameter("pass exactly one of --delivered and --resend")
    if not reason.strip():
        raise typer.BadParameter("--reason is required and must not be blank")
    if all_in_doubt == bool(batch_ids):
        raise typer.BadParameter("name the batches to settle, or pass --all-in-doubt (not both)")
    decision = Decision.DELIVERED if delivered else Decision.RESEND
    with open_for_settling(journal) as opened:
        done = settle_batches(opened, decision, reason, None if all_in_doubt else batch_ids, run_id=run_id)
    for row in done:
        what = "as delivered" if decision is Decision.DELIVERED else "for re-send: `animal-sync resume` sends it"
        typer.echo(f"batch {row.batch_id} of run {row.run_id} settled {what} ({row.user}, {row.settled_at})")


@app.command()
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
    from .export import export as export_records
    from .export import export_to_path

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


@app.command()
def report(
    html: Annotated[Path, typer.Option("--html", help="Write a self-contained HTML page here.")],
    journal: JournalOpt = DEFAULT_JOURNAL,
    run_id: RunOpt = None,
) -> None:
    """Write a run's report as one HTML page: summary, charts, retries and errors, the audit's exceptions."""
    from .html_report import write_html_report

    with _readonly(journal) as opened:
        data = write_html_report(opened, html, run_id)
    verdict = "audit OK" if data.audit.ok else f"audit NOT OK ({sum(data.audit.exception_counts.values())} exceptions)"
    typer.echo(f"wrote {html}: run {data.status.run_id} {data.status.state}, {verdict}")


@app.command()
def demo(
    animals: Annotated[Optional[int], typer.Option(help="Animals in the simulator (default: 5,000-6,000).")] = None,
    chaos: Annotated[float, typer.Option(help="The simulator's chaos, percent.")] = 2.0,
    journal: Annotated[Path, typer.Option("--journal", help="Journal for the demo run (replaced).")] = Path("demo.db"),
    progress: ProgressOpt = ProgressMode.AUTO,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show no progress.")] = False,
) -> None:
    """Start the bundled simulator (strict mode), sync everything into it, audit, and show its verification."""
    from .demo import run_demo

    configure_logging(LogFormat.AUTO, quiet=True)  # the demo's own lines tell the story; warnings still show
    code = run_demo(
        journal, animals=animals, chaos=chaos, echo=typer.echo,
        progress=lambda: _progress(progress, quiet, DEFAULT_EVERY),
    )
    typer.echo(f"report: `animal-sync report --html report.html --journal {journal}` writes the run's page")
    raise typer.Exit(code)


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")] = 3123,
    animals: Annotated[Optional[int], typer.Option(min=0, help="Number of animals, whole pages of 10 (default: drawn from the seed, 5,000-6,000).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the animals, their page count and the chaos; restart with another to model upstream's restart.")] = 1,
    chaos: Annotated[float, typer.Option(min=0.0, max=100.0, help="Percent of requests hit by chaos: half stall, half fail with 5xx.")] = 2.0,
    stall_min: Annotated[float, typer.Option(min=0.0, help="Shortest stall, seconds.")] = 5.0,
    stall_max: Annotated[float, typer.Option(min=0.0, help="Longest stall, seconds.")] = 15.0,
    strict: Annotated[bool, typer.Option(help="Take a batch's ids one at a time; answer a plain-text 500 at the first already delivered.")] = False,
    fault: Annotated[
        Optional[list[str]],
        typer.Option(help="Hostile data for one animal, ID=KIND (repeatable), e.g. 7=bad_born_at; kinds: see the docs."),
    ] = None,
    revise: Annotated[Optional[list[int]], typer.Option(min=0, help="Serve this animal changed (another name), as if revised upstream since an earlier sync (repeatable).")] = None,
    url_fd: Annotated[Optional[int], typer.Option(hidden=True, help="Write the URL once listening to this inherited pipe (for SimulatorProcess).")] = None,
) -> None:
    """Serve the bundled Animals API simulator until Ctrl-C.

    It is as strict as the real server. Ids run 0..N-1 in full pages of 10; a page past the end lists none and
    an unknown id answers a plain-text 500. Of the requests --chaos hits, half stall (5-15 s by default)
    before they are handled and half fail at once with a plain-text 500/502/503/504, unhandled, the body
    unread (the connection is then closed). `Expect: 100-continue` is answered only when the body is read, so
    after any stall. Idle keep-alive connections are closed after 5 s. POST /home takes a JSON array of at most
    100 (400 above that, 422 for a malformed item or a body that is not JSON); with --strict it takes the ids
    one at a time and answers a plain-text 500 at the first one already delivered, keeping the ids before it.
    A restart of the real server draws a new data set: restart with another --seed for the same. To model
    records changed upstream between two syncs, restart on the same --seed with --revise ID.
    """
    from .simulator import SimulatorConfig, serve

    if stall_max < stall_min:
        raise typer.BadParameter("--stall-max must not be below --stall-min")
    faults: dict[int, str] = {}
    for item in fault or []:
        animal_id, _, kind = item.partition("=")
        if not animal_id.strip().isdigit() or not kind:
            raise typer.BadParameter(f"--fault takes ID=KIND, not {item!r}")
        faults[int(animal_id)] = kind.strip()
    serve(SimulatorConfig(
        host=host, port=port, animals=animals, seed=seed, chaos=chaos,
        stall_min=stall_min, stall_max=stall_max, strict=strict, faults=faults, revised=frozenset(revise or ()),
    ), url_fd=url_fd)


def _option(field: str) -> TyperOption | None:
    """The option that sets a Settings field, read from the commands' own option table (None: no flag sets it)."""
    for command in typer.main.get_command(app).commands.values():  # type: ignore[attr-defined]
        for param in command.params:
            if isinstance(param, TyperOption) and param.name == field:
                return param
    return None


def _config_words(exc: ConfigError) -> str:
    """A settings error worded with the flag a person types; a field no flag sets keeps its field name."""
    option = _option(exc.field)
    flag = option.opts[0] if option is not None else exc.field
    if isinstance(exc, CredentialMissing):  # the secret comes back the way it came in: a flag, or a variable
        return (
            "the run was authenticated and the journal keeps no secret: pass the password again in"
            f" {flag} http://USER:PASSWORD@HOST (or {option.envvar if option else 'its variable'}),"
            " or the token in ANIMAL_SYNC_TOKEN"
        )
    return exc.describe(flag)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: every error a person can cause ends as one line and exit code 2."""
    try:
        result = app(args=argv, standalone_mode=False)
    except TyperException as exc:  # typer's vendored click: bad flags, values and commands
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `animal-sync {ctx.info_name} --help`)" if ctx is not None and ctx.parent else ""
        typer.echo(f"animal-sync: {exc.format_message()}{hint}", err=True)
        return 2
    except ConfigError as exc:
        typer.echo(f"animal-sync: {_config_words(exc)}", err=True)
        return 2
    except AnimalSyncError as exc:
        typer.echo(f"animal-sync: {exc}", err=True)
        return 2
    except sqlite3.Error as exc:  # a journal damaged on disk, met by a read the library did not wrap
        typer.echo(f"animal-sync: the journal cannot be read: {exc}", err=True)
        return 2
    except typer.Abort:
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
