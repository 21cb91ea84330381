"""The commands that drive a journal: `run` and `resume` (one attempt each, signals and progress wired) and `settle`.

An attempt's outcome becomes the shell's exit code here, at the edge: 0 clean, 1 exceptions, 2 a credential to fix
first, 130 stopped.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..config import DEFAULT_BASE_URL, DEFAULT_JOURNAL, Settings
from ..logs import LogFormat, configure_logging
from ..progress import DEFAULT_EVERY, OnProgress, ProgressMode
from ..shards import Shard
from .options import HoldOpt, JournalOpt, LogFormatOpt, ProgressEveryOpt, ProgressOpt, QuietOpt, progress_reporter

if TYPE_CHECKING:
    from ..pipeline import RunOutcome, RunResult

__all__ = ["STOP_SIGNALS", "exit_code", "resume", "run", "settle", "stop_on_signals"]

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

def exit_code(outcome: RunOutcome) -> int:
    """The shell's word for how an attempt ended: 0 clean, 2 a credential to fix first, 130 stopped, else 1."""
    from ..pipeline import RunOutcome

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
    full_resync: Annotated[bool, typer.Option("--full-resync", help="Send every animal again, although a full sync against this API already finished in the journal (without it, such a `run` is refused).")] = False,
    hold_in_doubt: HoldOpt = False,
    log_format: LogFormatOpt = LogFormat.AUTO,
    quiet: QuietOpt = False,
    progress: ProgressOpt = ProgressMode.AUTO,
    progress_every: ProgressEveryOpt = DEFAULT_EVERY,
) -> None:
    """Start a new sync run (the bearer token, if any, comes from ANIMAL_SYNC_TOKEN)."""
    from ..pipeline import start_run

    settings = Settings(
        base_url=base_url, journal=journal, workers=workers, post_workers=post_workers, batch_size=batch_size,
        retries=retries, get_timeout=get_timeout, get_timeout_floor=get_timeout_floor, get_deadline=get_deadline,
        post_timeout=post_timeout, limit=limit, dry_run=dry_run, incremental=incremental, resend_in_doubt=not hold_in_doubt, token=os.environ.get("ANIMAL_SYNC_TOKEN") or None,
        shard=None if shard is None else Shard.parse(shard),
    )
    configure_logging(log_format, quiet=quiet)
    _sync(lambda **live: start_run(settings, abandon=abandon, full_resync=full_resync, **live), progress_reporter(progress, quiet, progress_every, limit))


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
    from ..pipeline import resume_run

    configure_logging(log_format, quiet=quiet)
    overrides = {
        "resend_in_doubt": not hold_in_doubt,
        "token": os.environ.get("ANIMAL_SYNC_TOKEN") or None,
        "base_url": base_url,
    }
    _sync(lambda **live: resume_run(journal, overrides=overrides, **live), progress_reporter(progress, quiet, progress_every))


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
    from ..journal import Decision
    from ..settle import open_for_settling
    from ..settle import settle as settle_batches

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
