"""The long reliability suite (`make torture`): SIGKILLs, a kill mid-POST, heavy chaos and an outage, with figures.

Every case drives the real CLI in child processes (`python -m animal_sync ...`) against the bundled simulator
running in this process (strict: it refuses a batch repeating a delivered id, and keeps its own ledger), then
judges by that ledger and by the journal. Prints ONE line of figures; exits 1 if any figure is bad.

    kills      20 SIGKILLs of one sync at seeded instants (start-up, listing, fetching, POST in flight), each
               followed by `resume`: nothing lost, any id seen twice belongs to a batch the journal named in doubt
    targeted   a kill after the API took a POST but before its answer was journaled: named, held, then re-sent
    chaos30    30 % of requests stalled or failed: finishes clean, exactly once
    outage     the API stops mid-run: exit 1 once the retry budget is spent, journal consistent; back on the same
               port (a fresh ledger), `resume` finishes clean and the two ledgers together hold every animal
    disk-full  the journal's disk fills mid-run (a file size limit on the child): it stops with one line that
               names any batch whose answer it could not journal; once the disk grows, `resume` and `audit`:
               nothing lost, any id seen twice belongs to a named batch
    lock-deletion  the `.lock` beside a running journal is deleted: a second `resume` is refused with one line,
               the first run finishes, nothing duplicated
    kill-loop  issue 16's sequence, 10 rounds, each on a fresh strict simulator at 2 % chaos: `run` SIGKILLed while
               listing, then `resume`s SIGKILLed after 10, 25 and 40 delivered batches, then a last `resume`: the
               simulator's verdict exactly once, nothing missing, and exit 0 unless a batch is in doubt for a real
               cause (the API holds its animals: the kill caught its body out); a batch left in doubt that the API
               never received fails the round
    redirect   a front proxies lists and details but answers every POST 301/302/303/307/308 in turn (after reading
               the body or before), with a 200 at the Location; two SIGKILLs while a redirected POST is held; then it
               forwards and `resume` runs: after every step nothing is called delivered that the simulator lacks and
               `audit` never says OK with an animal missing; at the end every animal is delivered exactly once
    early-2xx  a front answers 200 to POSTs before 100 Continue, bodies unread, then forwards: the same checks
    wal-deletion   the journal's `-wal` is deleted under a running sync, which is then killed: the journal has lost
               committed state, and `resume`, `status` and `audit` each stop with one line; nothing more is sent
    same-count-swap  the API restarts mid-run on another data set with the same page count: the run stops with one
               line naming the change, and not one record of the new data set is posted
"""

from __future__ import annotations

import dataclasses
import argparse
import http.client
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from animal_sync.client.api import HOME_PATH
from animal_sync.journal import read_side_file, writer_pid_path
from animal_sync.simulator import Chaos, Simulator, SimulatorConfig, exactly_once

SEED = 20261122
KILLS = 20
KILL_ANIMALS = 15_000  # each kill runs to at most a share of what is left (progress_targets): all 20 land mid-run
# Stalled GETs queued before a between-posts kill, two per GET worker: on a fast machine the POSTs overlap back to
# back, and only a pause in fetching lets them drain to a moment with none in flight.
GAP_STALLS = 32
CHAOS_ANIMALS = 5_000
OUTAGE_ANIMALS = 1_700  # each ledger's list of missing ids stays under its cap of 1,000
TIMEOUT = 600  # per child, seconds
QUIET = ["--log-format", "json", "--quiet"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "animal_sync", *args]


def query(journal: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the journal read-only, as `status` does, also while a child writes it."""
    try:
        with closing(sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def scalar(journal: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    rows = query(journal, sql, params)
    return rows[0][0] if rows else None


def posted(journal: Path) -> int:
    return scalar(journal, "SELECT count(*) FROM animals WHERE state = 'posted'") or 0


def sending(journal: Path) -> list[tuple[int, str]]:
    return query(journal, "SELECT id, ids FROM batches WHERE state = 'sending'")


def in_doubt_batches(journal: Path) -> dict[int, set[int]]:
    rows = query(journal, "SELECT id, ids FROM batches WHERE in_doubt_at IS NOT NULL")
    return {batch_id: set(json.loads(ids)) for batch_id, ids in rows}


def audit(journal: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(cli("audit", "--json", "--journal", str(journal)), capture_output=True, text=True, timeout=TIMEOUT)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}


def delivered_ids(sim: Simulator) -> set[int] | None:
    """The ids a simulator's ledger holds, or None if its list of missing ids was capped (too many to tell)."""
    verdict = sim.verify()
    if len(verdict["missing_ids"]) != verdict["missing"]:
        return None
    return set(range(0, sim.total_animals)) - set(verdict["missing_ids"])  # ids start at 0, as upstream's do


def wait_until(condition: Any, process: subprocess.Popen[Any], timeout: float = TIMEOUT) -> bool:
    """True once `condition()` holds while the child still runs; False if the child ended first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return process.poll() is None


def kill(process: subprocess.Popen[Any]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


@dataclass
class Figures:
    kills: int = 0
    survived: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    in_doubt_batches: int = 0
    duplicated_outside: int = 0
    duplicated_inside: int = 0
    verdicts: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def tally(self, journal: Path, verdict: dict[str, Any]) -> set[int]:
        """Count what the simulator saw against what the journal named in doubt; return the named ids."""
        doubt = in_doubt_batches(journal)
        named = set().union(*doubt.values()) if doubt else set()
        duplicates = set(verdict["duplicate_ids"])
        self.lost += verdict["missing"]
        self.in_doubt_batches += len(doubt)
        self.duplicated_outside += len(duplicates - named)
        self.duplicated_inside += len(duplicates & named)
        return named


# --------------------------------------------------------------------------- 20 kills of one sync


def phase_at_kill(journal: Path, attempt: int) -> str:
    """What the killed attempt was doing, by what it had committed since it began (listing and fetching overlap)."""
    run = query(journal, "SELECT attempts, coalesce(resumed_at, started_at), total_pages FROM runs ORDER BY id DESC LIMIT 1")
    if not run or run[0][0] < attempt:
        return "start-up"  # the CLI had not journaled this attempt yet
    _, began, total_pages = run[0]
    if query(journal, "SELECT 1 FROM batches WHERE state = 'sending' AND sent_at >= ?", (began,)):
        return "posting"  # a POST this attempt sent was in flight, its body released
    if query(journal, "SELECT 1 FROM batches WHERE state = 'withheld'"):
        return "posting"  # a POST of this attempt was out, its body held back for 100 Continue
    if total_pages is None:
        return "listing"  # page 1 had not answered yet
    worked = query(journal, "SELECT 1 FROM animals WHERE updated_at >= ? AND state != 'discovered' LIMIT 1", (began,))
    listed = query(journal, "SELECT 1 FROM pages WHERE listed_at >= ? LIMIT 1", (began,))
    if not worked and not listed:
        return "start-up"  # journaled, but still setting up (in-doubt marking, re-queueing)
    return "fetching"  # listing, fetching and batching, no POST in flight


def progress_targets(base: int, attempt: int, rng: random.Random) -> tuple[int, int]:
    """Posted counts for kill `attempt`: when to start looking for its instant, and the most it may run to.

    The ceiling is an even share of what is LEFT (this kill, every later one and the final resume each keep one);
    the start is a random part of it. So however fast the machine, no kill finds the run already finished: fixed
    counts ran out of animals before kill 18 on a fast machine, where POSTs overlap so tightly that waiting for a
    moment between them let the run race on.
    """
    share = (KILL_ANIMALS - base) // (KILLS - attempt + 2)
    return base + int(rng.random() * share), base + share


def kills_case(work: Path, figures: Figures) -> None:
    rng = random.Random(SEED)
    journal = work / "kills.db"
    log = (work / "kills.log").open("a")
    config = SimulatorConfig(port=0, animals=KILL_ANIMALS, seed=SEED, chaos=2, stall_min=0.2, stall_max=0.6, strict=True)
    with Simulator(config) as sim:
        # A small retry budget: chaos 2 % never spends it, and the strict API's 500 to a re-sent in-doubt batch
        # (retried like any 5xx) costs a second, not ten.
        first = cli(
            "run", "--base-url", sim.url, "--journal", str(journal),
            "--get-timeout", "0.15", "--post-timeout", "3", "--retries", "4", *QUIET,
        )
        resume = cli("resume", "--journal", str(journal), *QUIET)
        for attempt in range(1, KILLS + 1):
            process = subprocess.Popen(first if attempt == 1 else resume, stdout=subprocess.DEVNULL, stderr=log)
            started, base = time.monotonic(), posted(journal)
            target, ceiling = progress_targets(base, attempt, rng)
            # Instants chosen to reach every phase: by the clock, by the journal's progress, or by what is in flight.
            how = "listing" if attempt == 1 else rng.choice(["start-up", "time", "time", "between-posts", "between-posts",
                                                              "post-in-flight", "post-in-flight"])
            if how == "listing":  # as soon as the run exists: page 1 is still being asked for
                landed = wait_until(lambda: scalar(journal, "SELECT count(*) FROM runs") == 1, process)
            elif how == "start-up":  # as soon as this attempt is journaled: in-doubt marking, re-queueing
                landed = wait_until(lambda: (scalar(journal, "SELECT attempts FROM runs") or 0) >= attempt, process)
            elif how == "time":  # by the clock, but never past this kill's share of the work on a fast machine
                pause = rng.uniform(0.5, 2.5)
                landed = wait_until(lambda: time.monotonic() - started >= pause or posted(journal) >= target, process)
            elif how == "between-posts":  # some progress, then a moment with no POST in flight (or the ceiling)
                landed = wait_until(lambda: posted(journal) >= target, process)
                sim.queue_chaos(*[Chaos.STALL] * GAP_STALLS, method="GET")  # fetching pauses, the POSTs drain
                landed = landed and wait_until(
                    lambda: phase_at_kill(journal, attempt) == "fetching" or posted(journal) >= ceiling, process
                )
            else:  # some progress, then a POST this attempt sent, held in flight by a stall however fast the machine
                landed = wait_until(lambda: posted(journal) >= target, process)
                sim.queue_chaos(Chaos.STALL, method="POST")
                landed = landed and wait_until(lambda: phase_at_kill(journal, attempt) == "posting", process)
            if not figures.check(landed, f"kill {attempt} ({how}): the child ended (code {process.poll()}) first"):
                process.wait()
                sim.drop_queued_chaos()
                continue
            kill(process)
            sim.drop_queued_chaos()  # stalls queued to pause this process are not the next attempt's to meet
            figures.kills += 1
            figures.phases[phase_at_kill(journal, attempt)] += 1
            intact = scalar(journal, "PRAGMA quick_check") in ("ok", None)
            figures.check(intact, f"kill {attempt}: the journal failed quick_check")
            figures.survived += intact  # and the next attempt must carry on from it (checked below)
        final = subprocess.run(resume, stdout=subprocess.DEVNULL, stderr=log, timeout=TIMEOUT)
        log.close()
        traceback = "Traceback" in (work / "kills.log").read_text()
        if not figures.check(final.returncode in (0, 1) and not traceback, f"final resume exit {final.returncode}"):
            figures.survived = 0
        verdict = sim.verify()
    named = figures.tally(journal, verdict)
    duplicates = set(verdict["duplicate_ids"])
    figures.check(verdict["missing"] == 0, f"kills: {verdict['missing']} animals lost, e.g. {verdict['missing_ids'][:5]}")
    figures.check(verdict["content_mismatches"] == 0, f"kills: {verdict['content_mismatches']} wrong records")
    figures.check(not duplicates - named, f"kills: ids seen twice outside in-doubt batches: {sorted(duplicates - named)[:5]}")
    figures.check(not sending(journal), "kills: a batch was left 'sending'")
    code, report = audit(journal)
    kinds = set(report.get("exception_counts", {}))
    # at_least_once: a killed batch's re-send the API took (the journal cannot know the first send was lost)
    figures.check(kinds <= {"in_doubt", "at_least_once"} and report.get("discovered") == KILL_ANIMALS, f"kills: audit says {kinds or report}")
    figures.check(code == final.returncode, f"kills: audit exit {code} but the final resume exit {final.returncode}")


# --------------------------------------------------------------------------- issue 16's kill loop

KILL_LOOP_ROUNDS = 10
KILL_LOOP_BATCHES = (10, 25, 40)  # delivered batches at the 2nd, 3rd and 4th kill, of some 55 in a default run
KILL_LOOP_FULL = 55  # batches of a default run (5,000-6,000 animals): a smaller run scales the kill points to it


def kill_loop_points(batches: int) -> tuple[int, ...]:
    """The delivered-batch counts to kill at: issue 16's (10, 25, 40) for a full run, scaled down for a smaller one."""
    if batches >= KILL_LOOP_FULL:
        return KILL_LOOP_BATCHES
    return tuple(max(1, point * batches // KILL_LOOP_FULL) for point in KILL_LOOP_BATCHES)


def kill_loop_round(work: Path, seed: int, animals: int | None = None) -> list[str]:
    """One round: run killed while listing, resumes killed after 10, 25 and 40 delivered batches, a last resume.

    Returns the round's problems (none: clean). Delivered batches are the simulator's own count of POSTs it took.
    """
    journal = work / f"kill-loop-{seed}.db"
    log_path = work / f"kill-loop-{seed}.log"
    problems: list[str] = []
    config = SimulatorConfig(port=0, animals=animals, seed=seed, chaos=2, stall_min=0.2, stall_max=0.6, strict=True)
    with Simulator(config) as sim, log_path.open("a") as log:
        points = kill_loop_points(-(-sim.total_animals // 100))
        first = cli("run", "--base-url", sim.url, "--journal", str(journal), "--get-timeout", "0.15",
                    "--post-timeout", "3", "--retries", "4", *QUIET)
        resume = cli("resume", "--journal", str(journal), *QUIET)
        plan = [("listing", first, lambda: scalar(journal, "SELECT count(*) FROM runs") == 1)]
        plan += [(f"after {point} batches", resume, lambda point=point: sim.verify()["posts"] >= point) for point in points]
        for name, command, moment in plan:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
            if not wait_until(moment, process):
                problems.append(f"kill {name}: the child ended first (code {process.wait()})")
                continue
            kill(process)
        final = subprocess.run(resume, stdout=subprocess.DEVNULL, stderr=log, timeout=TIMEOUT)
        verdict = sim.verify()
        delivered = delivered_ids(sim)
    doubt = {batch_id: set(json.loads(ids)) for batch_id, ids in
             query(journal, "SELECT id, ids FROM batches WHERE state = 'in_doubt'")}
    named = set().union(*doubt.values()) if doubt else set()
    never_received = [batch_id for batch_id, ids in doubt.items() if delivered is None or not ids <= delivered]
    # A batch once in doubt whose re-send the strict API took: its first send never arrived, so the doubt was
    # for no cause the API could see (what issue 16 found: a reset on a reused connection before the body left).
    never_received += [batch_id for (batch_id,) in
                       query(journal, "SELECT id FROM batches WHERE in_doubt_at IS NOT NULL AND state = 'posted'")]
    if never_received:
        problems.append(f"batches in doubt that the API never received: {sorted(never_received)}")
    if verdict["missing"] or verdict["content_mismatches"] or verdict["duplicates_delivered"]:
        problems.append(f"not exactly once: {verdict['missing']} missing (e.g. {verdict['missing_ids'][:5]}), "
                        f"{verdict['content_mismatches']} wrong, {verdict['duplicates_delivered']} taken twice")
    if not set(verdict["duplicate_ids"]) <= named:
        problems.append(f"re-sent outside an in-doubt batch: {sorted(set(verdict['duplicate_ids']) - named)[:5]}")
    if final.returncode != (1 if doubt else 0):
        problems.append(f"final resume exit {final.returncode} with {len(doubt)} batch(es) in doubt")
    if "Traceback" in log_path.read_text():
        problems.append(f"a traceback in {log_path.name}")
    return [f"kill-loop seed {seed}: {problem}" for problem in problems]


def kill_loop_case(work: Path, figures: Figures) -> None:
    clean = 0
    for round_number in range(KILL_LOOP_ROUNDS):
        problems = kill_loop_round(work, SEED + round_number)
        figures.problems.extend(problems)
        journal = work / f"kill-loop-{SEED + round_number}.db"
        figures.in_doubt_batches += scalar(journal, "SELECT count(*) FROM batches WHERE state = 'in_doubt'") or 0
        clean += not problems
    figures.verdicts[f"kill-loop clean rounds {clean} of {KILL_LOOP_ROUNDS}"] = clean == KILL_LOOP_ROUNDS


# --------------------------------------------------------------------------- a kill after the API took a POST


def targeted_case(work: Path, figures: Figures) -> None:
    journal = work / "targeted.db"
    common = ["--journal", str(journal), *QUIET]
    config = SimulatorConfig(port=0, animals=1_000, seed=SEED, chaos=0, stall_min=1.5, stall_max=1.5, strict=True)
    with Simulator(config) as sim:
        log = work / "targeted.log"
        # The first POST of a process meets a server not yet known to speak 100-continue: its body follows the
        # 0.3 s wait into the 1.5 s stall (journaled `sending` as it leaves), and the API takes it after the kill.
        # One POST at a time, so the batch `sending` is the stalled one.
        # Once a server has sent a 100, a stalled POST keeps its body: a kill then leaves it unsent, not in doubt.
        sim.queue_chaos(Chaos.STALL, method="POST")  # the first POST is held 1.5 s, then handled
        with log.open("w") as stderr:
            process = subprocess.Popen(
                cli("run", "--base-url", sim.url, "--retries", "2", "--get-timeout", "0.3", "--post-workers", "1", *common),
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        landed = wait_until(lambda: sim.stalled_requests >= 1 and bool(sending(journal)), process)
        time.sleep(0.3)  # the released body is on the wire, the handler still asleep
        delivered_at_kill = sim.verify()["delivered"]
        kill(process)
        deadline = time.monotonic() + 10
        while sim.stalled_requests and time.monotonic() < deadline:
            time.sleep(0.01)
        took_it = sim.verify()["delivered"] > delivered_at_kill  # the API handled the POST nobody waits for
        killed = {batch_id for batch_id, _ in sending(journal)}

        held = subprocess.run(cli("resume", "--hold-in-doubt", *common), capture_output=True, text=True, timeout=TIMEOUT)
        _, report = audit(journal)
        named = {item["batch_id"] for item in report.get("exceptions", {}).get("in_doubt", [])}
        held_ok = held.returncode == 1 and killed <= named and set(report.get("exception_counts", {})) == {"in_doubt"}
        held_ok = held_ok and sim.verify()["duplicates_rejected"] == 0  # held means not re-sent

        resent = subprocess.run(cli("resume", *common), capture_output=True, text=True, timeout=TIMEOUT)
        verdict = sim.verify()
    inside = figures.tally(journal, verdict)
    duplicates = set(verdict["duplicate_ids"])
    ok = all([
        figures.check(landed and bool(killed), f"targeted: the kill did not land on a stalled POST (child exit "
                      f"{process.returncode}: {log.read_text().strip()[-300:]})"),
        figures.check(took_it, "targeted: the API did not deliver the stalled POST after the kill"),
        figures.check(held_ok, f"targeted: --hold-in-doubt exit {held.returncode}, named {named}, killed {killed}: "
                      f"{held.stderr.strip()[-300:]}"),
        figures.check(resent.returncode in (0, 1) and verdict["missing"] == 0,
                      f"targeted: re-send exit {resent.returncode}: {resent.stderr.strip()[-300:]}"),
        figures.check(duplicates <= inside, "targeted: a repeat outside the in-doubt batch"),
    ])
    figures.verdicts["targeted kill named, held, delivered once"] = ok


# --------------------------------------------------------------------------- chaos 30 %


def chaos_case(work: Path, figures: Figures) -> None:
    journal = work / "chaos.db"
    config = SimulatorConfig(port=0, animals=CHAOS_ANIMALS, seed=SEED, chaos=30, stall_min=0.2, stall_max=0.6, strict=True)
    with Simulator(config) as sim:
        done = subprocess.run(
            cli("run", "--base-url", sim.url, "--journal", str(journal), *QUIET), capture_output=True, text=True, timeout=TIMEOUT
        )
        verdict = sim.verify()
    code, report = audit(journal)
    clean = done.returncode == 0 and code == 0 and report.get("ok") is True
    clean = clean and exactly_once(verdict)
    figures.lost += verdict["missing"]
    figures.duplicated_outside += len(verdict["duplicate_ids"])  # no kill here: any repeat is a bad one
    figures.verdicts["chaos30 clean"] = figures.check(clean, f"chaos30: exit {done.returncode}: {done.stderr.strip()[-300:]}")


# --------------------------------------------------------------------------- the API going away


def outage_case(work: Path, figures: Figures) -> None:
    journal = work / "outage.db"
    common = ["--journal", str(journal), *QUIET]
    config = SimulatorConfig(port=0, animals=OUTAGE_ANIMALS, seed=SEED, chaos=2, stall_min=0.2, stall_max=0.6, strict=True)
    first = Simulator(config).start()
    port = int(first.url.rsplit(":", 1)[1])

    run_over = threading.Event()

    def pull_the_plug() -> None:  # mid-run, by the API's own count
        while first.verify()["delivered"] < 800 and not run_over.is_set():
            time.sleep(0.002)
        first.stop()

    plug = threading.Thread(target=pull_the_plug, daemon=True)
    plug.start()
    gone = subprocess.run(cli("run", "--base-url", first.url, *common), capture_output=True, text=True, timeout=TIMEOUT)
    run_over.set()
    plug.join()
    said = gone.stderr.strip().splitlines()[-1] if gone.stderr.strip() else ""
    stopped_ok = gone.returncode == 1 and "the Animals API stopped answering" in said and "animal-sync resume" in said
    code, report = audit(journal)
    kinds = set(report.get("exception_counts", {}))
    consistent = not sending(journal) and code == 1 and kinds <= {"missing", "unlisted_page", "in_doubt"}

    with Simulator(dataclasses.replace(config, port=port)) as back:  # same port, same seed, fresh ledger
        again = subprocess.run(cli("resume", *common), capture_output=True, text=True, timeout=TIMEOUT)
        code2, report2 = audit(journal)
        before, after = delivered_ids(first), delivered_ids(back)
        verdicts = [first.verify(), back.verify()]
    doubt = in_doubt_batches(journal)
    inside = set().union(*doubt.values()) if doubt else set()
    everyone = set(range(0, OUTAGE_ANIMALS))
    counted = before is not None and after is not None
    twice = (before & after) if counted else set()
    covered = counted and before | after == everyone
    figures.lost += len(everyone - (before | after)) if counted else sum(v["missing"] for v in verdicts)
    figures.in_doubt_batches += len(doubt)
    figures.duplicated_outside += len(twice - inside) + sum(len(v["duplicate_ids"]) for v in verdicts)
    figures.duplicated_inside += len(twice & inside)
    ok = all([
        figures.check(stopped_ok, f"outage: exit {gone.returncode}, said {said!r}"),
        figures.check(consistent, f"outage: journal after the outage: audit exit {code}, {kinds}, sending {sending(journal)}"),
        figures.check(
            # a batch whose answer the outage swallowed is re-sent to the fresh ledger: at least once, and said so
            set(report2.get("exception_counts", {})) <= {"at_least_once"} and again.returncode == code2
            and report2.get("ok") is (code2 == 0),
            f"outage: resume exit {again.returncode}: {again.stderr.strip()[-300:]}",
        ),
        figures.check(covered, "outage: the two ledgers together do not hold every animal (or could not be told)"),
        figures.check(twice <= inside, f"outage: delivered to both outside in-doubt batches: {sorted(twice - inside)[:5]}"),
        figures.check(all(v["content_mismatches"] == 0 for v in verdicts), "outage: wrong records delivered"),
    ])
    figures.verdicts["outage exit 1 then resume clean"] = ok



# --------------------------------------------------------------------------- the journal's disk filling up

DISK_ANIMALS = 3_000
DISK_LIMIT = 600_000  # bytes any file of the child may grow to: the journal fills it a few hundred animals in
# A child whose files may not grow past a limit: past it, write() fails with EFBIG, as on a full disk.
SMALL_DISK = (
    "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "limit = int(sys.argv.pop(1)); resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
    "sys.argv[0] = 'animal-sync'; runpy.run_module('animal_sync', run_name='__main__')"
)


def disk_full_case(work: Path, figures: Figures) -> None:
    journal = work / "disk-full.db"
    common = ["--journal", str(journal), *QUIET]
    config = SimulatorConfig(port=0, animals=DISK_ANIMALS, seed=SEED, chaos=2, stall_min=0.2, stall_max=0.6, strict=True)
    with Simulator(config) as sim:
        full = subprocess.run(
            [sys.executable, "-c", SMALL_DISK, str(DISK_LIMIT), "run", "--base-url", sim.url, "--retries", "4", *common],
            capture_output=True, text=True, timeout=TIMEOUT,
        )
        said = full.stderr.strip().splitlines()[-1] if full.stderr.strip() else ""
        unanswered = [batch_id for batch_id, _ in sending(journal)]  # their answers, if any, were not journaled
        one_line = said.startswith(f"animal-sync: journal {journal}: ") and "Traceback" not in full.stderr
        named = all(f"batch {batch_id} (" in said for batch_id in unanswered)
        grown = subprocess.run(cli("resume", *common), capture_output=True, text=True, timeout=TIMEOUT)  # no limit now
        verdict = sim.verify()
    inside = figures.tally(journal, verdict)
    code, report = audit(journal)
    kinds = set(report.get("exception_counts", {}))
    ok = all([
        figures.check(full.returncode == 2 and one_line, f"disk-full: exit {full.returncode}, said {said!r}"),
        figures.check(named, f"disk-full: batches {unanswered} left sending but not named in {said!r}"),
        figures.check(0 < verdict["delivered"] and grown.returncode in (0, 1), f"disk-full: resume exit "
                      f"{grown.returncode}: {grown.stderr.strip()[-300:]}"),
        figures.check(verdict["missing"] == 0, f"disk-full: {verdict['missing']} animals lost"),
        figures.check(set(verdict["duplicate_ids"]) <= inside, "disk-full: a repeat outside the named batches"),
        figures.check(kinds <= {"in_doubt"} and code == grown.returncode, f"disk-full: audit exit {code}, {kinds}"),
    ])
    figures.verdicts["disk-full named"] = ok


# --------------------------------------------------------------------------- a second writer after `rm J.lock`


def lock_deletion_case(work: Path, figures: Figures) -> None:
    journal = work / "lock-deletion.db"
    common = ["--journal", str(journal), *QUIET]
    config = SimulatorConfig(port=0, animals=3_000, seed=SEED, chaos=2, stall_min=0.2, stall_max=0.6, strict=True)
    with Simulator(config) as sim:
        with (work / "lock-deletion.log").open("w") as stderr:
            first = subprocess.Popen(cli("run", "--base-url", sim.url, *common), stdout=subprocess.DEVNULL, stderr=stderr)
        running = wait_until(lambda: posted(journal) >= 300, first)
        writer_pid_path(journal).unlink(missing_ok=True)
        second = subprocess.run(cli("resume", *common), capture_output=True, text=True, timeout=TIMEOUT)
        first.wait(timeout=TIMEOUT)
        verdict = sim.verify()
    figures.tally(journal, verdict)
    code, report = audit(journal)
    said = second.stderr.strip()
    refused = second.returncode == 2 and said.count("\n") == 0 and f"journal {journal} is in use by another" in said
    ok = all([
        figures.check(running, f"lock-deletion: the first run ended (exit {first.returncode}) before the deletion"),
        figures.check(refused, f"lock-deletion: the second writer got exit {second.returncode}: {said[-300:]}"),
        figures.check(first.returncode == 0 and code == 0 and report.get("ok") is True,
                      f"lock-deletion: first run exit {first.returncode}, audit exit {code}"),
        figures.check(exactly_once(verdict), f"lock-deletion: not exactly once: {verdict['missing']} missing, "
                      f"{len(verdict['duplicate_ids'])} duplicated"),
    ])
    figures.verdicts["lock-deletion refused"] = ok


# --------------------------------------------------------------------------- hostile fronts: a redirect, a 2xx unread

FRONT_ANIMALS = 800  # 32 batches of 25: every redirect status meets a POST both before and after its body
FRONT_BATCH = "25"
REDIRECTS = (301, 302, 303, 307, 308)
FRONT_KILLS = 2  # SIGKILLs while a redirected POST is held, its body read and its answer not yet given
EARLY_POSTS = 12  # POSTs answered 200 before 100 Continue, their bodies never read, before the front forwards again


class FrontHandler(BaseHTTPRequestHandler):
    """One connection to a HostileFront: GETs proxied to the simulator, POSTs to /home met as the front's mode says."""

    protocol_version = "HTTP/1.1"
    server: "FrontServer"

    def handle_expect_100(self) -> bool:
        return True  # 100 Continue only when the body is read, as uvicorn does (never before an early answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        front = self.server.front
        if self.path == "/elsewhere":  # where the redirects point: a client that follows them gets a 200 here
            with front.lock:
                front.followed += 1
            return self.answer(200, b"{}")
        self.forward(None)

    def do_POST(self) -> None:
        front = self.server.front
        with front.lock:
            mode, posts = front.mode, front.posts
            front.posts += 1
        if self.path == "/elsewhere":  # a 307/308 followed: the batch goes to the simulator, past the release gate
            with front.lock:
                front.followed += 1
            return self.forward(self.read_body(), HOME_PATH)
        if self.path != HOME_PATH or mode == "forward" or posts not in front.faulty:
            return self.forward(self.read_body())
        if mode == "early-2xx":  # the API's word before it read a byte: the batch is on no server
            with front.lock:
                front.early += 1
            return self.answer(200, json.dumps({"message": "Helped 25 find home"}).encode(), close=True)
        status = REDIRECTS[posts % len(REDIRECTS)]
        before_body = (posts // len(REDIRECTS)) % 2 == 1  # five after the body, five before it, and round again
        with front.lock:
            front.redirects[status] += 1
        location = (("Location", "/elsewhere"),)
        if before_body:
            return self.answer(status, b"", location, close=True)
        self.read_body()  # read, and dropped: nothing reaches the simulator
        if front.hold_next.is_set():  # keep this redirected POST open until the harness has killed its client
            front.hold_next.clear()
            front.holding.set()
            front.release.wait(10)
        self.answer(status, b"", location)

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return self.rfile.read(length)

    def forward(self, body: bytes | None, path: str | None = None) -> None:
        """Ask the simulator on a fresh connection and relay its answer (502 if it gave none)."""
        upstream = http.client.HTTPConnection(*self.server.front.upstream, timeout=30)
        try:
            headers = {"Content-Type": self.headers.get("Content-Type", "application/json")} if body is not None else {}
            upstream.request(self.command, path or self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            self.answer(answer.status, data, (("Content-Type", answer.getheader("Content-Type", "text/plain")),))
        except (OSError, http.client.HTTPException) as exc:
            self.answer(502, f"front: {exc}".encode(), (("Content-Type", "text/plain"),), close=True)
        finally:
            upstream.close()

    def answer(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = (), close: bool = False) -> None:
        self.send_response(status)
        if not any(name == "Content-Type" for name, _ in headers):
            self.send_header("Content-Type", "application/json")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close:  # an unread body must not be parsed as the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    front: "HostileFront"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client SIGKILLed mid-answer breaks its connection: expected here, not a fault of the front


class HostileFront:
    """A front on 127.0.0.1 before a simulator: lists and details proxied, POST /home redirected (statuses in turn,
    after the body is read or before), answered 200 before 100 Continue with the body unread, or forwarded."""

    def __init__(self, upstream_url: str, mode: str, faulty: range = range(sys.maxsize)) -> None:
        host, port = upstream_url.removeprefix("http://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.mode = mode  # "redirect", "early-2xx" or "forward"; switched by the harness
        self.faulty = faulty  # the POSTs (numbered from 0 as they come) the mode applies to; the rest are forwarded
        self.lock = threading.Lock()
        self.posts = self.early = self.followed = 0
        self.redirects: Counter[int] = Counter()
        self.hold_next, self.holding, self.release = threading.Event(), threading.Event(), threading.Event()
        self.server = FrontServer(("127.0.0.1", 0), FrontHandler)
        self.server.front = self
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def hold(self) -> None:
        """Hold the next redirected POST (its body read) open until `let_go()`."""
        self.release.clear()
        self.holding.clear()
        self.hold_next.set()

    def let_go(self) -> None:
        self.hold_next.clear()
        self.release.set()

    def __enter__(self) -> HostileFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.let_go()
        self.server.shutdown()
        self.server.server_close()


def posted_ids(journal: Path) -> set[int]:
    """The ids the journal calls delivered (posted, or settled by a person)."""
    return {row[0] for row in query(journal, "SELECT id FROM animals WHERE state IN ('posted', 'settled')")}


def false_promises(journal: Path, sim: Simulator) -> tuple[set[int], bool, int, dict[str, Any]]:
    """Animals the journal calls delivered that the simulator never received, and whether `audit` said OK while
    any discovered animal was not on the server (both must stay empty and False after every step); then the
    audit's exit code and report."""
    on_server = delivered_ids(sim)
    assert on_server is not None, "more missing ids than the simulator lists: use fewer animals"
    code, report = audit(journal)
    discovered = {row[0] for row in query(journal, "SELECT id FROM animals")}
    said_ok = (code == 0 or report.get("ok") is True) and bool(discovered - on_server)
    return posted_ids(journal) - on_server, said_ok, code, report


def redirect_case(work: Path, figures: Figures) -> None:
    journal = work / "redirect.db"
    common = ["--journal", str(journal), *QUIET]
    config = SimulatorConfig(port=0, animals=FRONT_ANIMALS, seed=SEED, chaos=0, strict=True)
    false_deliveries: set[int] = set()
    false_oks = kills = code = 0
    report: dict[str, Any] = {}
    with Simulator(config) as sim, HostileFront(sim.url, "redirect") as front, (work / "redirect.log").open("w") as log:
        first = cli("run", "--base-url", front.url, "--batch-size", FRONT_BATCH, "--post-workers", "2", "--retries", "2",
                    "--post-timeout", "5", *common)
        resume = cli("resume", *common)

        def judged() -> None:  # after every step: nothing called delivered that is not on the server
            nonlocal false_oks, code, report
            false, ok_said, code, report = false_promises(journal, sim)
            false_deliveries.update(false)
            false_oks += ok_said

        for attempt in range(FRONT_KILLS):  # killed while a redirected POST is held, its body read and unanswered
            front.hold()
            process = subprocess.Popen(first if attempt == 0 else resume, stdout=subprocess.DEVNULL, stderr=log)
            if wait_until(front.holding.is_set, process, timeout=60):
                kill(process)
                kills += 1
            else:
                process.wait()
            front.let_go()
            judged()
        redirected = subprocess.run(resume, stdout=subprocess.DEVNULL, stderr=log, timeout=TIMEOUT)  # to its end
        judged()
        mid = sim.verify()["delivered"]
        front.mode = "forward"  # the redirect phase is over
        final = subprocess.run(resume, stdout=subprocess.DEVNULL, stderr=log, timeout=TIMEOUT)
        judged()
        verdict = sim.verify()
    figures.tally(journal, verdict)
    traceback = "Traceback" in (work / "redirect.log").read_text()
    kinds = set(report.get("exception_counts", {}))
    answered = sum(front.redirects.values())
    ok = all([
        figures.check(kills == FRONT_KILLS, f"redirect: {kills} of {FRONT_KILLS} kills landed on a held redirect"),
        figures.check(len(front.redirects) == len(REDIRECTS), f"redirect: statuses met: {dict(front.redirects)}"),
        figures.check(front.followed == 0, f"redirect: {front.followed} redirects followed to /elsewhere"),
        figures.check(mid == 0, f"redirect: {mid} animals reached the simulator while every POST was redirected"),
        figures.check(not false_deliveries, f"redirect: {len(false_deliveries)} animals called delivered, not on the server"),
        figures.check(false_oks == 0, f"redirect: audit said OK with animals missing on the server ({false_oks} steps)"),
        figures.check(redirected.returncode == 1 and not traceback, f"redirect: the redirected resume exit "
                      f"{redirected.returncode} (or a traceback in redirect.log)"),
        # at_least_once: a batch in doubt after its redirect, re-sent; the strict API took it, so it was not there
        figures.check(exactly_once(verdict) and kinds <= {"at_least_once"} and final.returncode == code,
                      f"redirect: after the redirects, resume exit {final.returncode}, audit exit {code} {kinds}: "
                      f"{verdict['missing']} missing, {verdict['duplicates_rejected']} repeats"),
    ])
    figures.verdicts[f"redirect ({answered} 3xx, {kills} kills, {front.followed} followed, {len(false_deliveries)} false "
                     f"deliveries, {false_oks} false OKs) exactly once"] = ok


def early_2xx_case(work: Path, figures: Figures) -> None:
    journal = work / "early-2xx.db"
    common = ["--journal", str(journal), *QUIET]
    config = SimulatorConfig(port=0, animals=FRONT_ANIMALS, seed=SEED, chaos=0, strict=True)
    # POST 0 is forwarded, so the client knows the server speaks 100-continue (as the real API does) and never sends
    # a body without one: an early answer stays early however late it comes on a loaded machine. One POST at a
    # time, so none is out before that first 100 Continue. Then EARLY_POSTS early 200s, then forwarding, mid-run.
    early = range(1, 1 + EARLY_POSTS)
    with Simulator(config) as sim, HostileFront(sim.url, "early-2xx", early) as front, \
            (work / "early-2xx.log").open("w") as log:
        run = subprocess.run(
            cli("run", "--base-url", front.url, "--batch-size", FRONT_BATCH, "--post-workers", "1", *common),
            stdout=subprocess.DEVNULL, stderr=log, timeout=TIMEOUT,
        )
        false_deliveries, false_oks, _, _ = false_promises(journal, sim)
        final = subprocess.run(cli("resume", *common), stdout=subprocess.DEVNULL, stderr=log, timeout=TIMEOUT)
        false, ok_said, code, report = false_promises(journal, sim)
        false_deliveries, false_oks = false_deliveries | false, false_oks + ok_said
        verdict = sim.verify()
    figures.tally(journal, verdict)
    traceback = "Traceback" in (work / "early-2xx.log").read_text()
    ok = all([
        figures.check(front.early == EARLY_POSTS, f"early-2xx: {front.early} early answers, not {EARLY_POSTS}"),
        figures.check(not false_deliveries, f"early-2xx: {len(false_deliveries)} animals called delivered, not on the server"),
        figures.check(false_oks == 0, f"early-2xx: audit said OK with animals missing on the server ({false_oks} steps)"),
        figures.check(run.returncode == 1 and not traceback, f"early-2xx: the run exit {run.returncode} (or a traceback)"),
        figures.check(exactly_once(verdict) and final.returncode == 0 and code == 0 and report.get("ok") is True,
                      f"early-2xx: resume exit {final.returncode}, audit exit {code}: {verdict['missing']} missing, "
                      f"{verdict['duplicates_rejected']} repeats"),
    ])
    figures.verdicts[f"early-2xx ({front.early} 200s unread, {len(false_deliveries)} false deliveries, {false_oks} false "
                     f"OKs) exactly once"] = ok
# --------------------------------------------------------------------------- a journal rolled back by `rm J.db-wal`


def _mark(journal: Path) -> int:
    side = read_side_file(journal)
    return side.mark if side is not None and side.mark is not None else -1


def wal_deletion_case(work: Path, figures: Figures) -> None:
    journal = work / "wal-deletion.db"
    common = ["--journal", str(journal), *QUIET]
    config = SimulatorConfig(port=0, animals=3_000, seed=SEED, chaos=2, stall_min=0.2, stall_max=0.6, strict=True)
    with Simulator(config) as sim:
        with (work / "wal-deletion.log").open("w") as stderr:
            first = subprocess.Popen(cli("run", "--base-url", sim.url, *common), stdout=subprocess.DEVNULL, stderr=stderr)
        running = wait_until(lambda: posted(journal) >= 300, first)
        marked = _mark(journal)
        journal.with_name(journal.name + "-wal").unlink(missing_ok=True)
        # A durable commit (a batch's `sending` mark) after the deletion: it lives only in the deleted -wal now.
        running = running and wait_until(lambda: _mark(journal) > marked + 1, first, timeout=60)
        kill(first)
        posts = sim.verify()["posts"]
        said = {}
        for command in (["resume", *QUIET], ["status"], ["audit"]):
            done = subprocess.run(cli(*command, "--journal", str(journal)), capture_output=True, text=True, timeout=TIMEOUT)
            said[command[0]] = (done.returncode, done.stderr.strip())
        after = sim.verify()["posts"]
    refused = all(code == 2 and err.count("\n") == 0 and "lost committed state" in err for code, err in said.values())
    ok = all([
        figures.check(running, f"wal-deletion: the run ended (exit {first.returncode}) before the deletion was tested"),
        figures.check(refused, f"wal-deletion: a rolled-back journal was not refused: {said}"),
        figures.check(after == posts, f"wal-deletion: {after - posts} POSTs sent after the rollback"),
    ])
    figures.verdicts["wal-deletion refused"] = ok


# --------------------------------------------------------------------------- a restart with the same page count


def same_count_swap_case(work: Path, figures: Figures) -> None:
    journal = work / "same-count-swap.db"
    config = SimulatorConfig(port=0, animals=3_000, seed=SEED, chaos=2, stall_min=0.2, stall_max=0.6, strict=True)
    first = Simulator(config).start()
    port = int(first.url.rsplit(":", 1)[1])
    second: list[Simulator] = []
    try:
        with (work / "same-count-swap.log").open("w") as stderr:
            run = subprocess.Popen(cli("run", "--base-url", first.url, "--journal", str(journal), *QUIET),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            running = wait_until(lambda: posted(journal) >= 300, run)
            first.stop()
            second.append(Simulator(dataclasses.replace(config, port=port, seed=SEED + 1)).start())
            _, err = run.communicate(timeout=TIMEOUT)
            stderr.write(err)
        verdict = second[0].verify()
    finally:
        for sim in (first, *second):
            sim.stop()
    said = err.strip().splitlines()[-1] if err.strip() else ""
    ok = all([
        figures.check(running, f"same-count-swap: the run ended (exit {run.returncode}) before the swap"),
        figures.check(run.returncode == 1 and "now lists other animals under the same ids" in said,
                      f"same-count-swap: exit {run.returncode}, said {said!r}"),
        # Whatever the new server got is the old data set's (a mismatch to it), never a record of its own.
        figures.check(verdict["delivered"] == verdict["content_mismatches"],
                      f"same-count-swap: {verdict['delivered'] - verdict['content_mismatches']} records of the new data set posted"),
    ])
    figures.verdicts["same-count-swap caught"] = ok


# Name -> case, run in this order by default; a new case is one function taking (work, figures) and one entry here.
CASES = {"kills": kills_case, "targeted": targeted_case, "chaos": chaos_case, "outage": outage_case}
CASES |= {"disk-full": disk_full_case, "lock-deletion": lock_deletion_case, "kill-loop": kill_loop_case}
CASES |= {"redirect": redirect_case, "early-2xx": early_2xx_case}
CASES |= {"wal-deletion": wal_deletion_case, "same-count-swap": same_count_swap_case}


def main(names: list[str]) -> int:
    """Run the named cases (all by default) and print the line of figures."""
    started = time.monotonic()
    figures = Figures()
    cases = [CASES[name] for name in names or CASES]
    with tempfile.TemporaryDirectory(prefix="animal-sync-torture-") as tmp:
        work = Path(tmp)
        for case in cases:
            try:
                case(work, figures)
            except Exception as exc:  # a crash of the harness is a bad figure too, not a silent pass
                figures.problems.append(f"{case.__name__}: {type(exc).__name__}: {exc}")
    phases = ", ".join(f"{name} {figures.phases[name]}" for name in ("start-up", "listing", "fetching", "posting"))
    parts = [
        f"kills {figures.kills} survived {figures.survived} ({phases})",
        f"animals lost {figures.lost}",
        f"in-doubt batches {figures.in_doubt_batches}",
        f"animals duplicated outside in-doubt {figures.duplicated_outside}",
        f"duplicates inside in-doubt {figures.duplicated_inside}",
        *(f"{name} {'yes' if ok else 'NO'}" for name, ok in figures.verdicts.items()),
        f"elapsed {time.monotonic() - started:.0f} s",
    ]
    expected_kills = KILLS if kills_case in cases else 0
    bad = figures.problems or figures.kills != expected_kills or figures.survived != expected_kills
    for problem in figures.problems:
        print(f"torture: problem: {problem}", file=sys.stderr)
    print("torture: " + ", ".join(parts), flush=True)
    return 1 if bad else 0


def parse(argv: list[str]) -> list[str]:
    """The cases to run; argparse turns an unknown name into one usage line and exit 2, not a KeyError."""
    parser = argparse.ArgumentParser(description="The long reliability suite; prints one line of figures.")
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (default: all)")
    cases = parser.parse_args(argv).cases
    for name in cases:
        if name not in CASES:
            parser.error(f"unknown case {name!r} (choose from {', '.join(CASES)})")
    return cases


if __name__ == "__main__":
    sys.exit(main(parse(sys.argv[1:])))
