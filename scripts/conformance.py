"""Conformance (`make conformance API_URL=...`): ONE full sync against any server, killed three times, then audited.

The sync runs as the real CLI in child processes with its default settings. It is SIGKILLed early (listing and
fetching), mid-way between POSTs, and late with a POST in flight (if one shows within a bounded wait, else between
POSTs), resumed after each kill, then judged by `audit --json`. It is one sync, so a strict server sees each animal
once. Prints ONE line of figures; exits 0 when the audit's only exceptions (if any) are batches it names in
doubt (still in doubt, or re-sent and taken: at least once), 1 otherwise, 2 on bad usage.

Without --api-url it starts the bundled simulator (strict, 2 % chaos, real 5-15 s stalls) in a child process and
also requires the simulator's own verdict: nothing missing, no wrong record.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from torture import QUIET, TIMEOUT, cli, kill, phase_at_kill, posted, query, scalar, wait_until

from animal_sync.simulator import SimulatorProcess
from animal_sync.errors import SimulatorError

PAGE_SIZE = 10  # the API's listing: 10 animals a page, so total_pages says how many animals to expect
IN_FLIGHT_WAIT = 20.0  # seconds to watch for a POST in flight before the late kill settles for between posts
CHAOS = "2"


@dataclass(frozen=True)
class Kill:
    """One planned SIGKILL: once this fraction of the expected animals is posted, at the first moment `when` holds.

    A POST in flight is watched for until `give_up` of them is posted (or IN_FLIGHT_WAIT passes), then the kill
    settles for a moment between POSTs, with work still left to land on.
    """

    fraction: float
    when: str  # "any", "between-posts" or "post-in-flight"
    give_up: float = 1.0


# Early (the run has listed a page: listing and fetching), mid-way between POSTs, late with a POST in flight.
KILLS = (Kill(0.0, "any"), Kill(0.5, "between-posts"), Kill(0.7, "post-in-flight", give_up=0.9))


@dataclass
class Step:
    command: str
    code: int | None = None
    killed_at: str | None = None  # the phase a kill landed in

    def __str__(self) -> str:
        return f"{self.command} {self.code}" + (f" (killed {self.killed_at})" if self.killed_at else "")


@dataclass
class Outcome:
    steps: list[Step] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None  # the bundled simulator's own ledger
    stopped: str | None = None  # why the sync ended early: the failing child's last line
    in_doubt_animals: int = 0


def in_doubt_animals(journal: Path) -> int:
    """Animals in batches still in doubt: the API may hold them (a strict one refuses their re-send), unproven."""
    rows = query(journal, "SELECT ids FROM batches WHERE state = 'in_doubt' AND run_id = (SELECT max(id) FROM runs)")
    return sum(len(json.loads(ids)) for (ids,) in rows)


def expected_animals(journal: Path) -> int | None:
    pages = scalar(journal, "SELECT total_pages FROM runs ORDER BY id DESC LIMIT 1")
    return None if pages is None else pages * PAGE_SIZE


def kill_point(journal: Path, plan: Kill, attempt: int, process: subprocess.Popen[Any]) -> str | None:
    """Wait for the planned instant and SIGKILL the child there; the phase it landed in, or None if it ended first."""

    def share_posted(fraction: float) -> Callable[[], bool]:
        def reached() -> bool:
            expected = expected_animals(journal)
            listed = scalar(journal, "SELECT count(*) FROM pages") or 0
            return expected is not None and listed > 0 and posted(journal) >= fraction * expected

        return reached

    def in_phase(phase: str) -> Callable[[], bool]:
        return lambda: phase_at_kill(journal, attempt) == phase

    if not wait_until(share_posted(plan.fraction), process):
        return None
    if plan.when == "post-in-flight":
        give_up, in_flight = share_posted(plan.give_up), in_phase("posting")
        wait_until(lambda: in_flight() or give_up(), process, timeout=IN_FLIGHT_WAIT)
    if plan.when != "any" and not in_phase("posting")() and not wait_until(in_phase("fetching"), process):
        return None  # between posts: the first moment with no POST in flight
    if process.poll() is not None:
        return None
    kill(process)
    return phase_at_kill(journal, attempt)  # where it landed, read from what the killed child left behind


def sync(url: str, journal: Path, log: Path, outcome: Outcome) -> None:
    """Run, kill and resume per KILLS, then resume to the end.

    A child that fails on its own (exit 1: the API stopped answering; 2: usage or journal) ends the sync there,
    with its last words, instead of burning a retry budget per remaining step.
    """
    first = cli("run", "--base-url", url, "--journal", str(journal), *QUIET)
    resume = cli("resume", "--journal", str(journal), *QUIET)
    for attempt, plan in enumerate((*KILLS, None), start=1):
        command = first if attempt == 1 else resume
        step = Step(command[3])
        outcome.steps.append(step)
        with log.open("a") as stderr:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            step.killed_at = kill_point(journal, plan, attempt, process) if plan else None
            step.code = process.wait(TIMEOUT)
        if step.code and not step.killed_at and plan is not None:
            said = log.read_text(errors="replace").strip().splitlines()
            outcome.stopped = said[-1][:200] if said else f"{step.command} exit {step.code}"
            return


def audit(journal: Path, outcome: Outcome) -> None:
    done = subprocess.run(cli("audit", "--json", "--journal", str(journal)), capture_output=True, text=True, timeout=TIMEOUT)
    outcome.steps.append(Step("audit", done.returncode))
    try:
        outcome.report = json.loads(done.stdout)
    except json.JSONDecodeError:
        outcome.report = {}


def settled(report: dict[str, Any]) -> int:
    """In-doubt batches settled later (`animal-sync settle`); journals from before that command have no such key."""
    value = report.get("settled", 0)
    return len(value) if isinstance(value, list | dict) else int(value or 0)


def summary(outcome: Outcome, journal: Path, elapsed: float) -> tuple[str, bool]:
    """The one line of figures, and whether they pass."""
    report, counts = outcome.report, outcome.report.get("exception_counts", {})
    # Batches the journal named in doubt: still in doubt, or re-sent and taken (at least once). Either is the
    # one exception a kill may leave, and the audit names each by its batch.
    doubtful = ("in_doubt", "at_least_once")
    other = sorted(set(counts) - set(doubtful))
    exceptions = report.get("exceptions", {})
    named = all(item.get("batch_id") is not None for kind in doubtful for item in exceptions.get(kind, []))
    ok = bool(report) and not other and named
    parts = [
        f"animals {report.get('discovered', 0)}",
        f"delivered {report.get('posted', 0)}",
        f"quarantined {counts.get('quarantined', 0)}",
        f"in doubt {counts.get('in_doubt', 0)} ({outcome.in_doubt_animals} animals)",
        f"at least once {counts.get('at_least_once', 0)}",
        f"settled {settled(report)}",
    ]
    if other:
        parts.append("other exceptions " + " ".join(f"{kind} {counts[kind]}" for kind in other))
    if not report:
        parts.append("no audit report")
    if outcome.stopped:
        parts.append(f"stopped: {outcome.stopped}")
    if outcome.verdict is not None:
        verdict = outcome.verdict
        parts.append(
            f"simulator delivered {verdict.get('delivered')} of {verdict.get('animals')}, missing {verdict.get('missing')}"
            f", wrong {verdict.get('content_mismatches')}"
        )
        ok = ok and verdict.get("missing") == 0 and verdict.get("content_mismatches") == 0
    line = (
        "conformance: " + ", ".join(parts) + "; exit codes " + ", ".join(map(str, outcome.steps))
        + f"; journal {journal}; elapsed {elapsed:.0f} s"
    )
    return line, ok


def main(api_url: str | None, animals: int | None, journal_dir: Path | None) -> int:
    started = time.monotonic()
    work = journal_dir or Path(tempfile.mkdtemp(prefix="animal-sync-conformance-"))  # kept: settle or inspect it later
    journal = work / "conformance.db"
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"conformance: cannot use {work} for the journal: {exc.strerror}", file=sys.stderr)
        return 2
    if journal.exists():
        print(f"conformance: {journal} exists: a second sync would deliver every animal again; use an empty --journal "
              "directory", file=sys.stderr)
        return 2
    outcome = Outcome()
    extra = ["--animals", str(animals)] if animals is not None else []
    try:
        with SimulatorProcess("--strict", "--chaos", CHAOS, *extra) if api_url is None else nullcontext() as simulator:
            sync(api_url or simulator.url, journal, work / "conformance.log", outcome)
            audit(journal, outcome)
            outcome.in_doubt_animals = in_doubt_animals(journal)
            if simulator is not None:
                outcome.verdict = simulator.verify()
    except SimulatorError as exc:
        print(f"conformance: the bundled simulator: {exc}", file=sys.stderr)
        return 1
    line, ok = summary(outcome, journal, time.monotonic() - started)
    print(line, flush=True)
    if any(step.code == 2 for step in outcome.steps[:-1]):
        return 2
    return 0 if ok else 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block: `conformance: <what>; usage: ...`, exit 2."""
        self.exit(2, f"conformance: {message}; usage: {' '.join(self.format_usage().split()[1:])}\n")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="conformance.py", description="One killed-and-resumed sync against a server, audited.")
    parser.add_argument("--api-url", help="the server to sync against (default: start the bundled strict simulator)")
    parser.add_argument("--animals", type=int, help="animals in the bundled simulator (only without --api-url)")
    parser.add_argument("--journal", type=Path, metavar="DIR", help="an empty directory for the journal and log")
    args = parser.parse_args(argv)
    if args.api_url is not None and args.animals is not None:
        parser.error("--animals sizes the bundled simulator; a real server has the animals it has")
    if args.animals is not None and args.animals < 1:
        parser.error(f"--animals must be 1 or more, not {args.animals}")
    return args


if __name__ == "__main__":
    options = parse(sys.argv[1:])
    sys.exit(main(options.api_url, options.animals, options.journal))
