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
from contextlib import AbstractContextManager, ExitStack, closing, contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..config import DEFAULT_BASE_URL, DEFAULT_JOURNAL, Settings
from ..errors import ApiNotReached
from ..logs import LogFormat, configure_logging
from .progress import DEFAULT_EVERY, OnProgress, ProgressMode
from ..shards import Shard
from .web import MetricsTextfileOpt, PushgatewayOpt, publish_metrics
from .options import HoldOpt, JournalOpt, LogFormatOpt, ProgressEveryOpt, ProgressOpt, QuietOpt, progress_reporter
from .suggest import command, invoked

if TYPE_CHECKING:
    from ..engine.attempt import Progress
    from ..engine.contact import Unanswered
    from ..engine.pipeline import RunOutcome, RunResult

__all__ = ["STOP_SIGNALS", "StopSignals", "exit_code", "resume", "run", "settle", "stop_on_signals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal was closed


class StopSignals:
    """The stop signals received, counted by the handler alone; the main thread acts on them in `heed`.

    A handler that prints can land while the main thread is inside a write to the same stream, and raise
    "reentrant call": so the handler only counts, and the main thread, polling, does the talking.
    """

    def __init__(self, quit_words: str) -> None:
        self.stop = threading.Event()
        self.received = 0  # written by the handler only
        self._heeded = 0
        self._quit_words = quit_words
        self.handler = self._count  # one object, installed for every stop signal

    def _count(self, signum: int, frame: Any) -> None:
        self.received += 1

    def heed(self) -> None:
        """Main thread: the first signal stops after the POSTs in flight, a second quits at once (exit 130)."""
        while self._heeded < self.received:
            self._heeded += 1
            if self._heeded == 1:
                self.stop.set()
                # print, not typer.echo: click writes to the stream under sys.stderr, past the proxy that keeps bars whole.
                print("animal-sync: stopping after the POSTs in flight (again to quit at once)", file=sys.stderr, flush=True)
            else:
                # At once means not waiting for stalled POSTs in worker threads. The journal is consistent at every
                # commit, as after a SIGKILL (which the tests prove safe): the batches in flight come back in doubt.
                print(f"animal-sync: quitting at once; {self._quit_words}", file=sys.stderr, flush=True)
                os._exit(130)


def _exit_130(signum: int, frame: Any) -> None:
    os._exit(130)  # the process is on its way out after a stop: a later signal must not turn 130 into 143


@contextmanager
def stop_on_signals(quit_words: str = "batches then in flight will be in doubt") -> Iterator[StopSignals]:
    """First Ctrl-C, SIGTERM or SIGHUP: finish in-flight POSTs and stop cleanly. Second: quit at once.

    The handlers last for the `with` block only: a library caller gets its own handlers back, unless a stop was
    asked for, when the process is ending with 130 and any later stop signal ends it at once, still with 130.
    """
    signals = StopSignals(quit_words)
    previous = {signum: signal.signal(signum, signals.handler) for signum in STOP_SIGNALS}
    try:
        yield signals
    finally:
        for signum, before in previous.items():
            after = before if before is not None else signal.SIG_DFL  # None: set outside Python
            signal.signal(signum, _exit_130 if signals.received else after)


def _in_worker(call: Callable[[], RunResult], signals: StopSignals) -> RunResult:
    """Run the attempt in a worker thread while the main thread heeds the stop signals, and return its result."""
    outcome: list[Any] = []

    def work() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed back to the main thread, which raises it as the attempt would have
            outcome.append(exc)

    worker = threading.Thread(target=work, name="attempt", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
        signals.heed()
    signals.heed()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def exit_code(outcome: RunOutcome) -> int:
    """The shell's word for how an attempt ended: 0 clean, 2 a credential to fix first, 130 stopped, else 1."""
    from ..engine.pipeline import RunOutcome

    if outcome is RunOutcome.CLEAN:
        return 0
    if outcome is RunOutcome.CREDENTIAL_REFUSED:  # a usage error: nothing passes until the credential changes
        return 2
    if outcome is RunOutcome.STOPPED:
        return 130
    return 1


def next_steps(result: RunResult) -> str:
    """What to type next after an attempt, each command with this invocation's journal (and API, for a `run`)."""
    from ..engine.pipeline import RunOutcome

    resume = command("resume")
    outcome = result.outcome
    if outcome is RunOutcome.CREDENTIAL_REFUSED:
        return f": pass a valid one (ANIMAL_SYNC_TOKEN, or a password in --base-url) and run {resume}"
    if outcome is RunOutcome.UPSTREAM_CHANGED:
        run_again = command("run", "--abandon", base_url=result.base_url or None, url=True)
        return f". Start over with {run_again}, or {resume} if the old data set is served again"
    if outcome is RunOutcome.UNREACHABLE:
        return f": run {resume} when it is back"
    if outcome is RunOutcome.STOPPED:
        return f": run {resume} to continue"
    if outcome is RunOutcome.EMPTY_PAGES:
        return f": check the API, then {resume} lists them again"
    if outcome in (RunOutcome.CHECK_FAILED, RunOutcome.NEVER_LISTED):
        return f"; run {resume} to try again"
    if outcome is RunOutcome.EXCEPTIONS:
        tail = f"; run {command('audit')} for details, {resume} to retry"
        if result.in_doubt or result.resent:
            tail += f", {command('settle', '--help', journal=DEFAULT_JOURNAL)} to decide what is in doubt"
        return tail
    return ""


def _waiting_words(url: str, cause: str) -> str:
    return f"animal-sync: could not reach the Animals API at {url} ({cause})"


class _Countdown:
    """The first contact's countdown on stderr: the cause at once, then the seconds it keeps trying.

    On a terminal one line counts down in place; elsewhere (cron, CI, a pipe) the first line is said once.
    """

    def __init__(self) -> None:
        self.shown: int | None = None

    def __call__(self, waiting: Unanswered) -> None:
        left = max(1, round(waiting.seconds_left))
        if self.shown == left:
            return
        words = f"{_waiting_words(waiting.url, waiting.cause)}; trying again for {left} s (Ctrl-C to give up)"
        if sys.stderr.isatty():
            print(f"\r\x1b[2K{words}", end="", file=sys.stderr, flush=True)
        elif self.shown is None:
            print(words, file=sys.stderr, flush=True)
        self.shown = left

    def close(self) -> None:
        if self.shown is not None and sys.stderr.isatty():
            print(file=sys.stderr, flush=True)


def _not_reached_words(exc: ApiNotReached, verb: str) -> str:
    """An API that never answered: where, why, for how long; nothing begun; the exact command to type again."""
    again = command(verb, base_url=exc.url)
    default = "; is it running (`animal-sync simulate` serves one)?" if exc.url.rstrip("/") == DEFAULT_BASE_URL else ""
    return (
        f"{_waiting_words(exc.url, exc.cause)}, tried for {exc.waited:.0f} s; nothing was"
        f" {'started' if verb == 'run' else 'resumed'}{default}. Once it answers (or with the right --base-url):"
        f" {again}"
    )


class _LateProgress:
    """The progress display, started at the attempt's first figures: after its first contact, whose countdown
    owns the terminal line until then (live bars would swallow it)."""

    def __init__(self, display: AbstractContextManager[OnProgress | None], countdown: _Countdown) -> None:
        self._display, self._countdown = display, countdown
        self._stack = ExitStack()
        self._callback: OnProgress | None = None
        self._started = False

    def __call__(self, progress: Progress) -> None:  # the coordinator's thread only
        if not self._started:
            self._started = True
            self._countdown.close()
            self._callback = self._stack.enter_context(self._display)
        if self._callback is not None:
            self._callback(progress)

    def close(self) -> None:
        self._stack.close()


def _sync(
    attempt: Callable[..., RunResult],
    progress: AbstractContextManager[OnProgress | None],
    verb: str,
    metrics: tuple[Any, ...] = (),
) -> None:
    """Run one attempt (`start_run` or `resume_run`) with signals and progress wired, then exit with its code.

    `metrics` (journal, pushgateway, textfile): published once the attempt ends, however it ends."""
    countdown = _Countdown()
    with stop_on_signals(f"batches then in flight will be in doubt: run {command('resume')}") as signals:
        try:
            with closing(_LateProgress(progress, countdown)) as on_progress:
                live = {"stop": signals.stop, "on_progress": on_progress, "on_waiting": countdown}
                result = _in_worker(lambda: attempt(**live), signals)
        except ApiNotReached as exc:
            countdown.close()
            typer.echo(_not_reached_words(exc, verb), err=True)
            raise typer.Exit(130 if signals.received else 1) from None
        finally:
            if metrics:
                publish_metrics(*metrics)
        code = exit_code(result.outcome)
        typer.echo(f"run {result.run_id} {result.state}: {result.message}{next_steps(result)}", err=code != 0)
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
    pushgateway: PushgatewayOpt = None,
    metrics_textfile: MetricsTextfileOpt = None,
) -> None:
    """Start a new sync run (the bearer token, if any, comes from ANIMAL_SYNC_TOKEN)."""
    from ..engine.pipeline import start_run

    settings = Settings(
        base_url=base_url, journal=journal, workers=workers, post_workers=post_workers, batch_size=batch_size,
        retries=retries, get_timeout=get_timeout, get_timeout_floor=get_timeout_floor, get_deadline=get_deadline,
        post_timeout=post_timeout, limit=limit, dry_run=dry_run, incremental=incremental, resend_in_doubt=not hold_in_doubt, token=os.environ.get("ANIMAL_SYNC_TOKEN") or None,
        shard=None if shard is None else Shard.parse(shard),
    )
    configure_logging(log_format, quiet=quiet)
    invoked(journal, base_url)
    _sync(
        lambda **live: start_run(settings, abandon=abandon, full_resync=full_resync, **live), progress_reporter(progress, quiet, progress_every, limit),
        "run", (journal, pushgateway, metrics_textfile),
    )


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
    pushgateway: PushgatewayOpt = None,
    metrics_textfile: MetricsTextfileOpt = None,
) -> None:
    """Continue the last unfinished run from the journal alone (the token, if any, again from ANIMAL_SYNC_TOKEN); in-doubt batches are re-sent unless held."""
    from ..engine.pipeline import resume_run

    configure_logging(log_format, quiet=quiet)
    overrides = {
        "resend_in_doubt": not hold_in_doubt,
        "token": os.environ.get("ANIMAL_SYNC_TOKEN") or None,
        "base_url": base_url,
    }
    invoked(journal, base_url)
    _sync(
        lambda **live: resume_run(journal, overrides=overrides, **live), progress_reporter(progress, quiet, progress_every),
        "resume", (journal, pushgateway, metrics_textfile),
    )


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
    from ..reports.settle import open_for_settling
    from ..reports.settle import settle as settle_batches

    if delivered == resend:
        raise typer.BadParameter("pass exactly one of --delivered and --resend")
    if not reason.strip():
        raise typer.BadParameter("--reason is required and must not be blank")
    if all_in_doubt == bool(batch_ids):
        raise typer.BadParameter("name the batches to settle, or pass --all-in-doubt (not both)")
    invoked(journal)
    decision = Decision.DELIVERED if delivered else Decision.RESEND
    with open_for_settling(journal) as opened:
        done = settle_batches(opened, decision, reason, None if all_in_doubt else batch_ids, run_id=run_id)
    for row in done:
        what = "as delivered" if decision is Decision.DELIVERED else f"for re-send: {command('resume')} sends it"
        typer.echo(f"batch {row.batch_id} of run {row.run_id} settled {what} ({row.user}, {row.settled_at})")
