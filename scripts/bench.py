"""The benchmark: animal-sync against the naive 32-thread client, paired, on the bundled strict simulator.

Every figure comes from one server, named in the table's heading: the bundled simulator (`animal-sync simulate
--strict`), started fresh in its own process for each measurement, with the client in another process (so neither
shares a GIL with this script). Each client process is reaped with `os.wait4` for its own CPU time and peak RSS;
the simulator's CPU time is read from /proc before and after the client ran; every run ends with GET /_verify,
the simulator's exactly-once verdict.

Legs (`--legs`):
- real: PAIRED, on the same seed back to back: animal-sync at 2 % chaos (real 5-15 s stalls) against the naive
  32-thread client at 0 %. Targets on the per-animal ratios of the pairs: median <= 1.0, worst <= 1.2, and every
  animal-sync run exactly once. One drawn stall decides a run, hence pairs, not medians of separate runs.
- calm: the same pairs at 0 % against 0 %: what our request pattern costs with nothing to recover from.
- journal: the journal's own cost: the same engine with its journal on disk against the same engine with its
  journal in an in-memory SQLite database (`--memory-journal-client`, for this benchmark only: no file, no WAL,
  no fsync). The SQL statements run in both, so the ratio is the price of keeping the journal durable on disk;
  what the statements themselves cost shows in a py-spy profile (docs/benchmarks.md). Never the naive client.
- startup: seconds from spawning each client to its first request reaching a listener on 127.0.0.1, and the
  client's CPU seconds by then (no simulator: only start-up is measured). Target: <= 0.15 s for animal-sync.
- scale: animal-sync alone at larger data sets: time per animal and peak RSS stay flat.
- shards: 1, 2 and 4 `animal-sync run --shard I/N` processes at once against one simulator, measured afresh in
  this run: wall time from the first start to the last exit, client CPU summed, RSS the largest.

Server CPU is given per 1,000 animals and per request (requests = first tries + retries, as each client counted
them), beside the client's CPU per 1,000 animals, for both clients: a server that works harder per animal for
one client shows there, and on 2 cores its CPU is time the client does not get. Server wakes per request (its
voluntary context switches) show whether its event loop takes requests in batches or one at a time.

Usage: .venv/bin/python scripts/bench.py [--legs real,calm,journal,startup,scale,shards] [--pairs 5] [--repeat 3]
       [--scale 10000,40000] [--quick] [--markdown docs/bench-table.md] [--sync-args "--workers 32"]
Findings: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Case", "Measurement", "Row", "Target", "floor_client", "main"]

LIST_PATH = "/animals/v1/animals"
HOME_PATH = "/animals/v1/home"
BATCH = 100
LEGS = ("real", "calm", "journal", "startup", "scale", "shards")
PAIRED = ("real", "calm", "journal")  # legs whose two cases run back to back on each seed
SHARDS = (1, 2, 4)  # the shards leg: this many `run --shard I/N` processes at once
TARGETS = {"real": 1.0, "real_worst": 1.2, "journal": 1.15, "startup": 0.15, "scale_time": 1.2, "scale_rss": 1.2, "rss_mb": 150.0}
NAIVE_THREADS = 32  # the naive client of the pairs, as in issues 11 and 19
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the naive client


def floor_client(url: str, threads: int) -> None:
    """The naive client: list all pages, fetch all details, post batches of 100, on `threads` threads.

    No journal, no timeouts (a stall is waited out, as a naive client does), and the only retry is a
    blind re-send of a request that errored (up to 20 times, then it is given up). Prints one JSON line
    with its own seconds and the requests it sent.
    """
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=threads, max_retries=0))
    resends = [0]
    given_up = [0]
    sent = [0]

    def send(method: str, path: str, body: Any = None) -> Any:
        for _ in range(21):
            sent[0] += 1  # racy across threads, but only a rough count is wanted
            try:
                answer = session.request(method, url + path, json=body, timeout=None)
                if answer.status_code == 200:
                    return answer.json()
            except requests.RequestException:
                pass
            resends[0] += 1
        given_up[0] += 1
        return None

    def home_record(detail: dict[str, Any]) -> dict[str, Any]:
        born = detail["born_at"]
        iso = None if born is None else (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=born)).isoformat()
        friends = [name for name in detail["friends"].split(",") if name]
        return {"id": detail["id"], "name": detail["name"], "born_at": iso, "friends": friends}

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        first = send("GET", f"{LIST_PATH}?page=1")
        pages = [first, *pool.map(lambda page: send("GET", f"{LIST_PATH}?page={page}"), range(2, first["total_pages"] + 1))]
        ids = [item["id"] for page in pages if page for item in page["items"]]
        details = pool.map(lambda animal_id: send("GET", f"{LIST_PATH}/{animal_id}"), ids)
        records = [home_record(detail) for detail in details if detail]
        batches = [records[start : start + BATCH] for start in range(0, len(records), BATCH)]
        list(pool.map(lambda batch: send("POST", HOME_PATH, batch), batches))
    report = {"seconds": time.monotonic() - started, "resends": resends[0], "given_up": given_up[0], "requests": sent[0]}
    print(json.dumps(report))


def memory_journal_client(argv: list[str]) -> int:
    """`animal-sync run` with its journal in an in-memory SQLite database: the engine unchanged, the disk gone.

    For the journal leg only. A run opens its journal once, through `sqlite3.connect`, so that call is pointed at
    `:memory:`; the journal path stays (the lock file and the free-space check use it; it is created empty).
    """
    import sqlite3

    journal = Path(argv[argv.index("--journal") + 1])
    journal.touch()
    real_connect = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if Path(str(database)) == journal:
            return real_connect(":memory:", *args, **kwargs)
        return real_connect(database, *args, **kwargs)

    sqlite3.connect = connect  # type: ignore[assignment]
    from animal_sync.cli import main as cli_main

    return cli_main(argv)


# --------------------------------------------------------------------------- measuring one case


@dataclass(frozen=True)
class Case:
    """One line of the table: which client, against which simulator."""

    leg: str
    label: str
    client: str  # "naive", "sync" or "sync-memory" (the journal in memory)
    chaos: float = 0.0
    animals: int | None = None  # None: the simulator's default for the seed (5,000-6,000)
    threads: int = 0  # naive client only
    strict_verdict: bool = True  # False: the verdict is reported, never a failure (the naive client)
    shards: int = 0  # sync only: N concurrent `run --shard I/N` processes, one journal each (0: one plain run)


@dataclass(frozen=True)
class Measurement:
    case: Case
    seed: int
    animals: int
    wall: float  # client process start to exit, seconds
    own_seconds: float | None  # what the client reports for its own work (no interpreter start-up)
    client_cpu: float  # user + system seconds of the client process(es)
    server_cpu: float  # user + system seconds of the simulator process during the client's run
    server_wakes: int  # voluntary context switches of the simulator process during the client's run
    peak_rss_mb: float  # the client process's peak RSS
    journal_bytes: int | None
    exit_code: int
    retries: int | None  # retries the client counted (animal-sync's journal counters, or the naive re-sends)
    requests: int | None  # requests the client sent, first tries and retries
    tail: float | None  # animal-sync only: seconds after the last batch was built, waiting on POSTs alone
    verdict: dict[str, Any]

    @property
    def clean(self) -> bool:
        from animal_sync.simulator import exactly_once  # lazily, as everywhere here: the naive client stays lean

        return exactly_once(self.verdict)

    @property
    def ok(self) -> bool:
        return not self.case.strict_verdict or (self.clean and self.exit_code == 0)

    @property
    def per_1000(self) -> float:
        return self.wall / self.animals * 1000

    @property
    def client_cpu_per_1000(self) -> float:
        return self.client_cpu / self.animals * 1000

    @property
    def server_cpu_per_1000(self) -> float:
        return self.server_cpu / self.animals * 1000

    @property
    def server_ms_per_request(self) -> float | None:
        return self.server_cpu / self.requests * 1000 if self.requests else None

    @property
    def server_wakes_per_request(self) -> float | None:
        return self.server_wakes / self.requests if self.requests else None


def _process_wakes(pid: int) -> int:
    """Voluntary context switches of all a process's threads: how often it went to sleep waiting (epoll, a lock).

    Per request it says whether the server's event loop handles requests in batches (one wake, many ready
    sockets) or one at a time (a wake, a syscall round and a loop pass for each).
    """
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
        except FileNotFoundError:  # a thread that just ended
            pass
    return total


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _run_children(commands: Sequence[Sequence[str]], timeout: float, stdout: Any, stderr: Any) -> tuple[float, int, float, float]:
    """Run children at once to their ends: the wall time to the last exit, the first non-zero exit code (else 0),
    their CPU seconds summed and their largest peak RSS in KiB, from each one's own rusage (os.wait4)."""
    started = time.monotonic()
    children = [subprocess.Popen(command, stdout=stdout, stderr=stderr) for command in commands]
    watchdogs = [threading.Timer(timeout, child.kill) for child in children]
    for watchdog in watchdogs:
        watchdog.start()
    codes, cpu, rss = [], 0.0, 0.0
    try:
        for child in children:
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait for it again
            codes.append(child.returncode)
            cpu += usage.ru_utime + usage.ru_stime
            rss = max(rss, usage.ru_maxrss)
    finally:
        for watchdog in watchdogs:
            watchdog.cancel()
    return time.monotonic() - started, next((code for code in codes if code), 0), cpu, rss


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class SyncFigures:
    own: float | None
    retries: int
    requests: int
    tail: float | None


def _sync_figures(journal: Path) -> SyncFigures:
    """From a run's journal: its own elapsed seconds, its retries, the requests it sent (pages listed, details
    fetched and batches posted once each, plus every retry) and its tail: seconds from the last batch built
    (fetching done) to the run's end, spent waiting on POSTs only (a stalled POST at the end shows here)."""
    from animal_sync.journal import Journal, last_batch_built_at

    with Journal.open(journal, readonly=True) as opened:
        run = opened.last_run()
        if run is None:
            return SyncFigures(None, 0, 0, None)
        retries = sum(n for name, n in opened.counters(run.id).items() if name.startswith("retry_"))
        firsts = len(opened.listed_pages(run.id)) + sum(opened.count_animals(run.id).values())
        firsts += sum(opened.count_batches(run.id).values())
        last_built = last_batch_built_at(opened, run.id)
    outcome = run.outcome or {}
    tail = _stamp(run.finished_at) - _stamp(last_built) if run.finished_at and last_built else None
    return SyncFigures(outcome.get("elapsed_seconds"), retries, firsts + retries, tail)


def _client_commands(case: Case, url: str, journals: list[Path], options: argparse.Namespace) -> list[list[str]]:
    if case.client == "naive":
        return [[sys.executable, __file__, "--floor-client", url, "--threads", str(case.threads)]]
    shards = [f"{index}/{case.shards}" for index in range(case.shards)]
    head = [sys.executable, __file__, "--memory-journal-client"] if case.client == "sync-memory" else [sys.executable, "-m", "animal_sync"]
    return [
        [
            *head, "run", "--base-url", url, "--journal", str(journal), "--quiet", "--log-format", "json",
            *(["--shard", shard] if shard else []), *options.sync_args,
        ]
        for journal, shard in zip(journals, shards or [None])
    ]


def measure(case: Case, seed: int, options: argparse.Namespace, workdir: Path) -> Measurement:
    """Start a fresh strict simulator, run the case's client against it once, verify, stop."""
    from animal_sync.journal import writer_pid_path
    from animal_sync.simulator import SimulatorProcess  # here, not at the top: the naive client's start-up stays lean

    sim_args = ["--strict", "--seed", str(seed), "--chaos", str(case.chaos), *options.stall_args]
    if case.animals is not None:
        sim_args += ["--animals", str(case.animals)]
    journals = [workdir / f"bench-{seed}-shard-{index}.db" for index in range(case.shards)] or [workdir / f"bench-{seed}.db"]
    log = workdir / "client.log"
    with SimulatorProcess(*sim_args) as sim, open(log, "w") as errors:
        assert sim.process is not None
        commands = _client_commands(case, sim.url, journals, options)
        server_before, wakes_before = _process_cpu(sim.process.pid), _process_wakes(sim.process.pid)
        with tempfile.TemporaryFile("w+") as out:
            wall, code, client_cpu, peak_rss = _run_children(commands, options.timeout, out, errors)
            out.seek(0)
            printed = out.read()
        server_cpu = _process_cpu(sim.process.pid) - server_before
        server_wakes = _process_wakes(sim.process.pid) - wakes_before
        verdict = sim.verify()
    if code != 0 and case.strict_verdict:
        print(f"  client exited {code}: {log.read_text()[-2000:]}", file=sys.stderr)
    own, retries, requests, journal_bytes, tail = None, None, None, None, None
    if case.client == "naive":
        try:
            report = json.loads(printed.strip().splitlines()[-1])
            own, retries, requests = report["seconds"], report["resends"], report["requests"]
        except (ValueError, IndexError, KeyError):
            pass
    elif case.client == "sync" and all(journal.exists() for journal in journals):
        figures = [_sync_figures(journal) for journal in journals]  # shards: the slowest one's, the rest summed
        own = max((f.own for f in figures if f.own is not None), default=None)
        retries = sum(f.retries for f in figures)
        requests = sum(f.requests for f in figures)
        tail = max((f.tail for f in figures if f.tail is not None), default=None)
        journal_bytes = sum(p.stat().st_size for j in journals for p in (j, Path(f"{j}-wal")) if p.exists())
    for journal in journals:
        for side in (journal, Path(f"{journal}-wal"), Path(f"{journal}-shm"), writer_pid_path(journal)):
            side.unlink(missing_ok=True)
    return Measurement(
        case=case, seed=seed, animals=verdict["animals"], wall=wall, own_seconds=own,
        client_cpu=client_cpu, server_cpu=server_cpu, server_wakes=server_wakes, peak_rss_mb=peak_rss / 1024,
        journal_bytes=journal_bytes, exit_code=code, retries=retries, requests=requests, tail=tail, verdict=verdict,
    )


# --------------------------------------------------------------------------- start-up


@dataclass(frozen=True)
class Startup:
    """Seconds from spawning a client to its first request on a local listener, and its CPU seconds by then."""

    label: str
    seconds: list[float]
    cpu: list[float]


def first_request(command: Callable[[str, Path], list[str]], workdir: Path) -> tuple[float, float]:
    """Spawn the client against a listener on 127.0.0.1 that only waits for the first bytes, then kill it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(60)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        journal = workdir / "startup.db"
        started = time.monotonic()
        child = subprocess.Popen(command(url, journal), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            connection, _ = listener.accept()
            with connection:
                connection.recv(1)
                arrived = time.monotonic()
                cpu = _process_cpu(child.pid)
        finally:
            child.kill()
            child.wait()
    for side in (journal, Path(f"{journal}-wal"), Path(f"{journal}-shm"), Path(f"{journal}.lock")):
        side.unlink(missing_ok=True)
    return arrived - started, cpu


# What `run` cannot start without: the card's libraries, and a typer command parsing an option (typer coerces every
# option through pydantic TypeAdapters; structlog loads Rich when it is installed, and typer requires Rich). This
# much, with none of our code, is the floor under the start-up target.
FLOOR_LIBRARIES = "requests, structlog, sqlite_utils, typer"


def floor_code(port: int) -> str:
    return (
        f"import {FLOOR_LIBRARIES}\n"
        "def main(page: int = 0) -> None:\n"
        f"    import socket; s = socket.create_connection(('127.0.0.1', {port})); s.send(b'G'); import time; time.sleep(30)\n"
        "typer.run(main)\n"
    )


def own_bytecode() -> str:
    """How animal_sync's own modules start: from cached bytecode (a wheel install, `make bytecode`), or compiled
    from source at every start (an editable install under PYTHONDONTWRITEBYTECODE, or after an edit)."""
    import animal_sync

    sources = sorted(Path(animal_sync.__file__).parent.rglob("*.py"))
    fresh = 0
    for source in sources:
        cached = Path(importlib.util.cache_from_source(str(source)))
        try:
            header = cached.read_bytes()[:16]
        except OSError:
            continue
        # a timestamp pyc (PEP 552 flags 0) is used when it records the source's mtime and size
        mtime, size = int(source.stat().st_mtime) & 0xFFFFFFFF, source.stat().st_size & 0xFFFFFFFF
        if header[4:8] == bytes(4) and header[8:12] == mtime.to_bytes(4, "little") and header[12:16] == size.to_bytes(4, "little"):
            fresh += 1
    rest = "" if fresh == len(sources) else ", the rest compiled from source at every start" + (
        " (PYTHONDONTWRITEBYTECODE is set; `make bytecode` compiles them ahead)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""
    )
    return f"animal_sync's own modules: {fresh} of {len(sources)} with fresh cached bytecode{rest}"


def measure_startup(repeat: int, workdir: Path) -> list[Startup]:
    clients: dict[str, Callable[[str, Path], list[str]]] = {
        "animal-sync run (python -m animal_sync)": lambda url, journal: [
            sys.executable, "-m", "animal_sync", "run", "--base-url", url, "--journal", str(journal), "--quiet",
            "--log-format", "json",
        ],
        f"naive client, {NAIVE_THREADS} threads": lambda url, journal: [
            sys.executable, __file__, "--floor-client", url, "--threads", str(NAIVE_THREADS),
        ],
        f"a one-option typer command, importing {FLOOR_LIBRARIES}, then a socket (the libraries alone)": lambda url, journal: [
            sys.executable, "-c", floor_code(int(url.rsplit(":", 1)[1])), "--page", "1",
        ],
        "python -c pass, then a socket (the interpreter alone)": lambda url, journal: [
            sys.executable, "-c",
            f"import socket; s = socket.create_connection(('127.0.0.1', {url.rsplit(':', 1)[1]})); s.send(b'G');"
            " import time; time.sleep(30)",
        ],
    }
    results = {label: Startup(label, [], []) for label in clients}
    for _ in range(repeat):  # interleaved, so a change in load hits every client alike
        for label, command in clients.items():
            seconds, cpu = first_request(command, workdir)
            results[label].seconds.append(seconds)
            results[label].cpu.append(cpu)
    return list(results.values())


# --------------------------------------------------------------------------- summarising


@dataclass(frozen=True)
class Row:
    """The medians of one case's repetitions."""

    case: Case
    runs: list[Measurement] = field(default_factory=list)

    def median(self, value: Callable[[Measurement], float | None]) -> float | None:
        values = [v for v in map(value, self.runs) if v is not None]
        return statistics.median(values) if values else None

    @property
    def wall(self) -> float:
        return self.median(lambda m: m.wall) or 0.0

    @property
    def per_1000(self) -> float:
        return self.median(lambda m: m.per_1000) or 0.0

    @property
    def rss(self) -> float:
        return self.median(lambda m: m.peak_rss_mb) or 0.0

    def verdict(self) -> str:
        """'clean', or the worst repetition's numbers (the naive client's column)."""
        problems = []
        for m in self.runs:
            v = m.verdict
            if m.clean and m.exit_code == 0:
                continue
            problems.append(
                f"seed {m.seed}: exit {m.exit_code}, missing {v.get('missing')}, duplicates {v.get('duplicates_rejected')},"
                f" mismatches {v.get('content_mismatches')}"
            )
        return "clean" if not problems else "; ".join(problems)


@dataclass(frozen=True)
class Target:
    name: str
    goal: str
    measured: str
    passed: bool | None  # None: not measured in this run


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def pairs(rows: list[Row], leg: str) -> list[tuple[Measurement, Measurement, float]]:
    """Each repetition of a paired leg: its first case's run, its second's on the same seed, and their ratio per
    animal (first / second)."""
    legged = [row for row in rows if row.case.leg == leg]
    if len(legged) != 2:
        return []
    first, second = legged
    return [(a, b, a.per_1000 / b.per_1000) for a, b in zip(first.runs, second.runs, strict=True)]


def evaluate(rows: list[Row], startups: list[Startup]) -> list[Target]:
    """Each target with this run's figures; a target whose legs did not run is 'n/a'."""
    targets = []
    real = pairs(rows, "real")
    if real:
        ratios = [ratio for _, _, ratio in real]
        median, worst = statistics.median(ratios), max(ratios)
        naive = f"naive {NAIVE_THREADS} threads at 0 %"
        targets += [
            Target(f"real: animal-sync at 2 % / {naive}, per animal, median of {len(real)} pairs", f"<= {TARGETS['real']}",
                   f"{median:.2f} ({', '.join(f'{r:.2f}' for r in ratios)})", median <= TARGETS["real"]),
            Target(f"real: animal-sync at 2 % / {naive}, per animal, worst pair", f"<= {TARGETS['real_worst']}",
                   f"{worst:.2f}", worst <= TARGETS["real_worst"]),
            Target("real: every animal-sync run exactly once", "all clean",
                   f"{sum(sync.ok for sync, _, _ in real)} of {len(real)} clean", all(sync.ok for sync, _, _ in real)),
        ]
    else:
        targets.append(Target("real: animal-sync at 2 % / naive at 0 %", f"median <= {TARGETS['real']}, worst <= {TARGETS['real_worst']}",
                              "n/a (leg not run)", None))
    calm = pairs(rows, "calm")
    if calm:
        ratios = [ratio for _, _, ratio in calm]
        targets.append(Target(f"calm: animal-sync at 0 % / naive at 0 %, per animal, median of {len(calm)} pairs",
                              "(reported)", f"{statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})", None))
    journal = pairs(rows, "journal")
    if journal:
        ratios = [ratio for _, _, ratio in journal]
        median = statistics.median(ratios)
        targets.append(Target(f"journal overhead: on disk / in memory, same engine, median of {len(journal)} pairs",
                              f"<= {TARGETS['journal']}", f"{median:.2f} ({', '.join(f'{r:.2f}' for r in ratios)})",
                              median <= TARGETS["journal"]))
    else:
        targets.append(Target("journal overhead: on disk / in memory", f"<= {TARGETS['journal']}", "n/a (leg not run)", None))
    sync_start = next((s for s in startups if s.label.startswith("animal-sync")), None)
    if sync_start is not None:
        median = statistics.median(sync_start.seconds)
        targets.append(Target("start-up: process start to first request, animal-sync run, median", f"<= {TARGETS['startup']} s",
                              f"{median:.3f} s (CPU {statistics.median(sync_start.cpu):.3f} s)", median <= TARGETS["startup"]))
    scale = sorted((row for row in rows if row.case.leg == "scale"), key=lambda r: r.case.animals or 0)
    if len(scale) >= 2:
        small, large = scale[0], scale[-1]
        names = f"{large.case.animals:,} vs {small.case.animals:,}"
        time_ratio = large.per_1000 / small.per_1000
        rss_ratio = large.rss / small.rss
        targets += [
            Target(f"s per 1,000 animals, {names}", f"<= {TARGETS['scale_time']}x",
                   f"{time_ratio:.2f}x ({large.per_1000:.3f} / {small.per_1000:.3f})", time_ratio <= TARGETS["scale_time"]),
            Target(f"peak RSS at {large.case.animals:,}", f"<= {TARGETS['rss_mb']:.0f} MB",
                   f"{large.rss:.1f} MB", large.rss <= TARGETS["rss_mb"]),
            Target(f"peak RSS, {names}", f"<= {TARGETS['scale_rss']}x",
                   f"{rss_ratio:.2f}x ({large.rss:.1f} / {small.rss:.1f} MB)", rss_ratio <= TARGETS["scale_rss"]),
        ]
    return targets


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "arch": platform.machine(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "load": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def server_stack() -> str:
    """What serves the bundled simulator's HTTP, read from its source: the figures hold for that stack only."""
    import importlib.util

    spec = importlib.util.find_spec("animal_sync.simulator")
    folder = Path(spec.origin).parent if spec and spec.origin else None
    source = "".join(path.read_text() for path in folder.glob("*.py")) if folder else ""

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    if "import uvicorn" in source:
        return f"uvicorn {version('uvicorn')} (h11) + Starlette {version('starlette')}"
    return "its own asyncio HTTP/1.1 server, not uvicorn"


def _pair_table(title: str, first: str, second: str, measured: list[tuple[Measurement, Measurement, float]]) -> list[str]:
    lines = [
        "",
        f"{title}:",
        "",
        f"| pair | seed | animals | {first} s / 1k | {second} s / 1k | ratio | {first} verdict | {second} verdict"
        f" | client CPU s / 1k: {first} | {second} | server CPU s / 1k: {first} | {second}"
        f" | server CPU ms / request: {first} | {second} | server wakes / request: {first} | {second}"
        f" | requests: {first} | {second} |",
        "|--:|--:|--:|--:|--:|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for number, (a, b, ratio) in enumerate(measured, 1):
        lines.append(
            f"| {number} | {a.seed} | {a.animals:,} | {a.per_1000:.3f} | {b.per_1000:.3f} | {ratio:.2f}"
            f" | {_verdict_word(a)} | {_verdict_word(b)}"
            f" | {a.client_cpu_per_1000:.2f} | {b.client_cpu_per_1000:.2f}"
            f" | {a.server_cpu_per_1000:.3f} | {b.server_cpu_per_1000:.3f}"
            f" | {_fmt(a.server_ms_per_request, '.3f')} | {_fmt(b.server_ms_per_request, '.3f')}"
            f" | {_fmt(a.server_wakes_per_request)} | {_fmt(b.server_wakes_per_request)}"
            f" | {_fmt(a.requests, ',')} | {_fmt(b.requests, ',')} |"
        )
    return lines


def render(info: dict[str, str], rows: list[Row], startups: list[Startup], targets: list[Target], options: argparse.Namespace) -> str:
    lines = [
        f"Benchmark of {info['date']} on {info['arch']}, {info['cpu']}, {info['cores']} cores, Python {info['python']};"
        f" load average at start {info['load']}. Server: the bundled simulator (`animal-sync simulate --strict`,"
        f" {server_stack()}), sharing the cores with the client. {options.pairs} pair(s) per paired leg,"
        f" {options.repeat} repetition(s) of the others, medians"
        + (f"; animal-sync flags: `{' '.join(options.sync_args)}`" if options.sync_args else "")
        + (f"; stalls {' '.join(options.stall_args)}" if options.stall_args else "; stalls 5-15 s")
        + ".",
    ]
    if rows:
        lines += [
            "",
            "| leg | client | animals | wall s | s / 1k animals | client CPU s / 1k | server CPU s / 1k"
            " | server CPU ms / request | server wakes / request | requests | peak RSS MB | journal B / animal | retries | POST tail s | simulator verdict |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for row in rows:
            per_animal = row.median(lambda m: None if m.journal_bytes is None else m.journal_bytes / m.animals)
            lines.append(
                f"| {row.case.leg} | {row.case.label} | {_fmt(row.median(lambda m: m.animals), ',.0f')}"
                f" | {row.wall:.2f} | {row.per_1000:.3f}"
                f" | {_fmt(row.median(lambda m: m.client_cpu_per_1000))} | {_fmt(row.median(lambda m: m.server_cpu_per_1000), '.3f')}"
                f" | {_fmt(row.median(lambda m: m.server_ms_per_request), '.3f')}"
                f" | {_fmt(row.median(lambda m: m.server_wakes_per_request))} | {_fmt(row.median(lambda m: m.requests), ',.0f')}"
                f" | {row.rss:.1f} | {_fmt(per_animal, '.0f')} | {_fmt(row.median(lambda m: m.retries), '.0f')}"
                f" | {_fmt(row.median(lambda m: m.tail), '.1f')} | {row.verdict()} |"
            )
    if real := pairs(rows, "real"):
        lines += _pair_table("Real pairs (animal-sync at 2 % chaos, the naive client at 0 %)", "sync", "naive", real)
    if calm := pairs(rows, "calm"):
        lines += _pair_table("Calm pairs (both at 0 % chaos)", "sync", "naive", calm)
    if journal := pairs(rows, "journal"):
        lines += _pair_table("Journal pairs (the same engine, its journal on disk / in an in-memory SQLite)", "disk", "memory", journal)
    if startups:
        lines += [
            "",
            f"Start-up ({len(startups[0].seconds)} spawns each, interleaved; a listener on 127.0.0.1, no simulator;"
            f" {own_bytecode()}):",
            "",
            "| client | s to first request, median | min | max | CPU s by then, median |",
            "|---|--:|--:|--:|--:|",
        ]
        for startup in startups:
            lines.append(
                f"| {startup.label} | {statistics.median(startup.seconds):.3f} | {min(startup.seconds):.3f}"
                f" | {max(startup.seconds):.3f} | {statistics.median(startup.cpu):.3f} |"
            )
    lines += ["", "| target | goal | measured | result |", "|---|---|---|---|"]
    for target in targets:
        result = "n/a" if target.passed is None else "PASS" if target.passed else "MISS"
        lines.append(f"| {target.name} | {target.goal} | {target.measured} | {result} |")
    return "\n".join(lines) + "\n"


def _verdict_word(m: Measurement) -> str:
    """'exactly once', or what the simulator's ledger found wrong."""
    if m.clean and m.exit_code == 0:
        return "exactly once"
    v = m.verdict
    return (f"NOT exactly once: exit {m.exit_code}, missing {v.get('missing')}, duplicates"
            f" {v.get('duplicates_rejected')}/{v.get('duplicates_delivered')}, mismatches {v.get('content_mismatches')}")


# --------------------------------------------------------------------------- the plan


def plan(options: argparse.Namespace) -> list[Case]:
    base = options.base_animals
    naive = f"naive client, {NAIVE_THREADS} threads, chaos 0 %"
    cases: list[Case] = []
    if "real" in options.legs:  # a pair: the same seed for both, run back to back (see the module docstring)
        cases += [
            Case("real", "animal-sync run, chaos 2 %", "sync", chaos=2.0, animals=base),
            Case("real", naive, "naive", animals=base, threads=NAIVE_THREADS, strict_verdict=False),
        ]
    if "calm" in options.legs:
        cases += [
            Case("calm", "animal-sync run, chaos 0 %", "sync", animals=base),
            Case("calm", naive, "naive", animals=base, threads=NAIVE_THREADS, strict_verdict=False),
        ]
    if "journal" in options.legs:
        cases += [
            Case("journal", "animal-sync run, journal on disk, chaos 0 %", "sync", animals=base),
            Case("journal", "animal-sync run, journal in memory (bench only), chaos 0 %", "sync-memory", animals=base),
        ]
    if "scale" in options.legs:
        cases += [Case("scale", f"animal-sync run, {n:,} animals", "sync", animals=n) for n in options.scale]
    if "shards" in options.legs:  # N processes at once against one simulator; CPU summed over them
        cases += [
            Case("shards", f"animal-sync run --shard I/{n}, {n} at once", "sync", animals=base, shards=n) for n in SHARDS
        ]
    return cases


def _ints(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="pairs of each paired leg: real, calm, journal (default 5)")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions of the scale and shards legs (default 1)")
    parser.add_argument("--startup-repeat", type=int, default=9, help="spawns of each client for the start-up leg")
    parser.add_argument("--legs", default=",".join(LEGS), help=f"subset of {','.join(LEGS)}")
    parser.add_argument("--scale", type=_ints, default=None, help="animal counts of the scale leg (default 10000,40000)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, short stalls, 1 repetition")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    parser.add_argument(
        "--sync-args", default="", help="extra flags for `animal-sync run`, e.g. '--workers 32' (one flag: --sync-args=--flag)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="kill a client after this many seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="where journals go (default: a temporary directory)")
    parser.add_argument("--floor-client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=NAIVE_THREADS, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    options.legs = [leg.strip() for leg in options.legs.split(",") if leg.strip()]
    unknown = set(options.legs) - set(LEGS)
    if unknown:
        parser.error(f"unknown legs {sorted(unknown)}; known: {', '.join(LEGS)}")
    options.sync_args = shlex.split(options.sync_args)
    options.base_animals, options.stall_args = None, []
    if options.quick:
        options.repeat = options.pairs = 1
        options.startup_repeat = 3
        options.base_animals = 1_000
        options.scale = options.scale or [2_000, 10_000]
        options.stall_args = ["--stall-min", "2", "--stall-max", "4"]
    options.scale = options.scale or [10_000, 40_000]
    return options


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--memory-journal-client"]:
        return memory_journal_client(argv[1:])
    options = parse(argv)
    if options.floor_client:
        floor_client(options.floor_client, options.threads)
        return 0
    info = machine()
    cases = plan(options)
    rows = {case: Row(case) for case in cases}
    startups: list[Startup] = []
    with tempfile.TemporaryDirectory(prefix="animal-sync-bench-", dir=options.workdir) as tmp:
        if "startup" in options.legs:
            startups = measure_startup(options.startup_repeat, Path(tmp))
            for startup in startups:
                print(f"startup: {startup.label}: median {statistics.median(startup.seconds):.3f} s", file=sys.stderr, flush=True)
        rounds = max([options.pairs if case.leg in PAIRED else options.repeat for case in cases], default=0)
        for rep in range(rounds):
            for case in cases:
                if rep >= (options.pairs if case.leg in PAIRED else options.repeat):
                    continue
                seed = rep + 1  # the same seeds in every leg, so each leg meets the same animal counts
                result = measure(case, seed, options, Path(tmp))
                rows[case].runs.append(result)
                print(
                    f"[{rep + 1}/{rounds}] {case.leg}: {case.label}: {result.animals:,} animals in"
                    f" {result.wall:.2f} s (client CPU {result.client_cpu:.1f} s, simulator CPU {result.server_cpu:.1f} s,"
                    f" RSS {result.peak_rss_mb:.0f} MB) {'clean' if result.clean else result.verdict.get('missing')}",
                    file=sys.stderr, flush=True,
                )
    table = render(info, list(rows.values()), startups, evaluate(list(rows.values()), startups), options)
    print(table)
    if options.markdown:
        options.markdown.parent.mkdir(parents=True, exist_ok=True)
        options.markdown.write_text(table)
    failed = [m for row in rows.values() for m in row.runs if not m.ok]
    for m in failed:
        brief = {k: v for k, v in m.verdict.items() if not isinstance(v, list)}
        print(f"NOT CLEAN: {m.case.label}, seed {m.seed}: exit {m.exit_code}, verdict {brief}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
