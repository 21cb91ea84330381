"""The benchmark table: floor, journal overhead, real conditions, scale and shards, each on a fresh strict simulator.

Every measurement starts `animal-sync simulate --strict` in its own child process, runs one client in
another child process (so neither shares a GIL with this script), reaps that client with `os.wait4` for
its own peak RSS and CPU time, reads the simulator's CPU time from /proc, and ends with GET /_verify.
Repetitions are interleaved (rep 1 of every leg, then rep 2, ...) so a drift in machine load hits all
legs alike; the table shows medians.

The real-conditions leg is PAIRED: each of its repetitions runs animal-sync at 2 % chaos with real 5-15 s
stalls and then the naive 32-thread client at 0 % chaos on the same seed, back to back, and the target is
on the ratios of those pairs (median and worst), since one drawn stall decides a run; each repetition's
exactly-once verdict is printed, and client CPU seconds per 1,000 animals for both clients.

The shards leg runs 1, 2 and 4 `animal-sync run --shard I/N` processes at once against one simulator: the wall
time is from the first start to the last exit, the client CPU is summed over the shard processes (RSS: the
largest), and the verdict is the simulator's over the union.

Usage: .venv/bin/python scripts/bench.py [--repeat 3] [--real-repeat 5] [--legs floor,overhead,real,scale,shards]
       [--scale 20000,200000] [--quick] [--markdown docs/bench-table.md] [--sync-args "--workers 32"]
Findings and recommendations from these measurements: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
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
from pathlib import Path
from typing import Any

__all__ = ["Case", "Measurement", "Row", "Target", "floor_client", "main"]

LIST_PATH = "/animals/v1/animals"
HOME_PATH = "/animals/v1/home"
BATCH = 100
LEGS = ("floor", "overhead", "real", "scale", "shards")
SHARDS = (1, 2, 4)  # the shards leg: this many `run --shard I/N` processes at once
TARGETS = {"real": 1.3, "real_worst": 1.6, "overhead": 1.15, "scale_time": 1.2, "scale_rss": 1.2, "rss_mb": 150.0}
NAIVE_THREADS = 32  # the naive client of the real-conditions pairs, as in issue 11
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the floor client


def floor_client(url: str, threads: int) -> None:
    """The simplest maximally parallel client: list all pages, fetch all details, post batches of 100.

    No journal, no timeouts (a stall is waited out, as a naive client does), and the only retry is a
    blind re-send of a request that errored (up to 20 times, then it is given up). Prints one JSON line.
    """
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=threads, max_retries=0))
    resends = [0]
    given_up = [0]

    def send(method: str, path: str, body: Any = None) -> Any:
        for _ in range(21):
            try:
                answer = session.request(method, url + path, json=body, timeout=None)
                if answer.status_code == 200:
                    return answer.json()
            except requests.RequestException:
                pass
            resends[0] += 1  # racy across threads, but only a rough count is wanted
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
    print(json.dumps({"seconds": time.monotonic() - started, "resends": resends[0], "given_up": given_up[0]}))


# --------------------------------------------------------------------------- measuring one case


@dataclass(frozen=True)
class Case:
    """One line of the table: which client, against which simulator."""

    leg: str
    label: str
    client: str  # "floor" or "sync"
    chaos: float = 0.0
    animals: int | None = None  # None: the simulator's default for the seed (5,000-6,000)
    threads: int = 0  # floor client only
    strict_verdict: bool = True  # False: the verdict is reported, never a failure (the naive client)
    shards: int = 0  # sync only: N concurrent `run --shard I/N` processes, one journal each (0: one plain run)


@dataclass(frozen=True)
class Measurement:
    case: Case
    seed: int
    animals: int
    wall: float  # client process start to exit, seconds
    own_seconds: float | None  # what the client reports for its own work (no interpreter start-up)
    client_cpu: float  # user + system seconds of the client process
    server_cpu: float  # user + system seconds of the simulator process during the client's run
    peak_rss_mb: float  # the client process's peak RSS
    journal_bytes: int | None
    exit_code: int
    retries: int | None  # retries the client counted (animal-sync's journal counters, or the floor's re-sends)
    tail: float | None  # animal-sync only: seconds after the last batch was built, waiting on POSTs alone
    verdict: dict[str, Any]

    @property
    def clean(self) -> bool:
        from animal_sync.simulator import exactly_once  # lazily, as everywhere here: the floor client stays lean

        return exactly_once(self.verdict)

    @property
    def ok(self) -> bool:
        return not self.case.strict_verdict or (self.clean and self.exit_code == 0)


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


def _sync_figures(journal: Path) -> tuple[float | None, int | None, float | None]:
    """The run's own elapsed seconds, its total retries, and its tail: seconds from the last batch built
    (fetching done) to the run's end, spent waiting on POSTs only (a stalled POST at the end shows here)."""
    from animal_sync.journal import Journal, last_batch_built_at

    with Journal.open(journal, readonly=True) as opened:
        run = opened.last_run()
        if run is None:
            return None, 0, None
        retries = sum(n for name, n in opened.counters(run.id).items() if name.startswith("retry_"))
        last_built = last_batch_built_at(opened, run.id)
    outcome = run.outcome or {}
    tail = _stamp(run.finished_at) - _stamp(last_built) if run.finished_at and last_built else None
    return outcome.get("elapsed_seconds"), retries, tail


def measure(case: Case, seed: int, options: argparse.Namespace, workdir: Path) -> Measurement:
    """Start a fresh strict simulator, run the case's client against it once, verify, stop."""
    from animal_sync.journal import writer_pid_path
    from animal_sync.simulator import SimulatorProcess  # here, not at the top: the floor client's start-up stays lean

    sim_args = ["--strict", "--seed", str(seed), "--chaos", str(case.chaos), *options.stall_args]
    if case.animals is not None:
        sim_args += ["--animals", str(case.animals)]
    shards = [f"{index}/{case.shards}" for index in range(case.shards)]
    journals = [workdir / f"bench-{seed}-shard-{index}.db" for index in range(case.shards)] or [workdir / f"bench-{seed}.db"]
    log = workdir / "client.log"
    with SimulatorProcess(*sim_args) as sim, open(log, "w") as errors:
        assert sim.process is not None
        if case.client == "floor":
            commands = [[sys.executable, __file__, "--floor-client", sim.url, "--threads", str(case.threads)]]
        else:
            commands = [
                [
                    sys.executable, "-m", "animal_sync", "run", "--base-url", sim.url, "--journal", str(journal),
                    "--quiet", "--log-format", "json", *(["--shard", shard] if shards else []), *options.sync_args,
                ]
                for journal, shard in zip(journals, shards or [None])
            ]
        server_before = _process_cpu(sim.process.pid)
        with tempfile.TemporaryFile("w+") as out:
            wall, code, client_cpu, peak_rss = _run_children(commands, options.timeout, out, errors)
            out.seek(0)
            printed = out.read()
        server_cpu = _process_cpu(sim.process.pid) - server_before
        verdict = sim.verify()
    if code != 0 and case.strict_verdict:
        print(f"  client exited {code}: {log.read_text()[-2000:]}", file=sys.stderr)
    own, retries, journal_bytes, tail = None, None, None, None
    if case.client == "floor":
        try:
            report = json.loads(printed.strip().splitlines()[-1])
            own, retries = report["seconds"], report["resends"]
        except (ValueError, IndexError, KeyError):
            pass
    elif all(journal.exists() for journal in journals):
        figures = [_sync_figures(journal) for journal in journals]  # shards: the slowest one's, retries summed
        own = max((f[0] for f in figures if f[0] is not None), default=None)
        retries = sum(f[1] or 0 for f in figures)
        tail = max((f[2] for f in figures if f[2] is not None), default=None)
        journal_bytes = sum(p.stat().st_size for j in journals for p in (j, Path(f"{j}-wal")) if p.exists())
    for journal in journals:
        for side in (journal, Path(f"{journal}-wal"), Path(f"{journal}-shm"), writer_pid_path(journal)):
            side.unlink(missing_ok=True)
    return Measurement(
        case=case, seed=seed, animals=verdict["animals"], wall=wall, own_seconds=own,
        client_cpu=client_cpu, server_cpu=server_cpu, peak_rss_mb=peak_rss / 1024,
        journal_bytes=journal_bytes, exit_code=code, retries=retries, tail=tail, verdict=verdict,
    )


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
        return self.median(lambda m: m.wall / m.animals * 1000) or 0.0

    @property
    def rss(self) -> float:
        return self.median(lambda m: m.peak_rss_mb) or 0.0

    @property
    def cpu_per_1000(self) -> float:
        """Client CPU seconds per 1,000 animals: the API shares the cores, so this is taken from its wall time."""
        return self.median(lambda m: m.client_cpu / m.animals * 1000) or 0.0

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


def _real_rows(rows: list[Row]) -> tuple[Row, Row] | None:
    """The real-conditions leg's animal-sync row and its paired naive row, if the leg ran."""
    real = [row for row in rows if row.case.leg == "real"]
    sync = next((row for row in real if row.case.client == "sync"), None)
    naive = next((row for row in real if row.case.client == "floor"), None)
    return (sync, naive) if sync and naive else None


def pair_ratios(rows: list[Row]) -> list[tuple[Measurement, Measurement, float]]:
    """Each real-conditions repetition: animal-sync's run, the naive run on the same seed, and their ratio."""
    pair = _real_rows(rows)
    if pair is None:
        return []
    return [(sync, naive, sync.wall / naive.wall) for sync, naive in zip(pair[0].runs, pair[1].runs, strict=True)]


def evaluate(rows: list[Row]) -> list[Target]:
    """Each issue target with this run's medians; a target whose legs did not run is 'n/a'."""
    by_leg: dict[str, list[Row]] = {}
    for row in rows:
        by_leg.setdefault(row.case.leg, []).append(row)
    floor = min(by_leg["floor"], key=lambda r: r.wall) if "floor" in by_leg else None
    targets = []

    def ratio_target(name: str, leg: str, limit: float) -> None:
        engine = by_leg.get(leg, [None])[0]
        if floor is None or engine is None:
            targets.append(Target(name, f"<= {limit}", "n/a (leg not run)", None))
            return
        ratio = engine.wall / floor.wall
        measured = f"{ratio:.2f} ({engine.wall:.1f} s / {floor.wall:.1f} s, {floor.case.label})"
        targets.append(Target(name, f"<= {limit}", measured, ratio <= limit))

    pairs = pair_ratios(rows)
    if pairs:
        ratios = [ratio for _, _, ratio in pairs]
        median, worst = statistics.median(ratios), max(ratios)
        clean = all(sync.ok for sync, _, _ in pairs)
        naive = f"naive {NAIVE_THREADS} threads at 0 %"
        targets += [
            Target(f"real conditions / {naive}, median of {len(pairs)} pairs", f"<= {TARGETS['real']}",
                   f"{median:.2f} ({', '.join(f'{r:.2f}' for r in ratios)})", median <= TARGETS["real"]),
            Target(f"real conditions / {naive}, worst pair", f"<= {TARGETS['real_worst']}",
                   f"{worst:.2f}", worst <= TARGETS["real_worst"]),
            Target("real conditions: every repetition exactly once", "all clean",
                   f"{sum(sync.ok for sync, _, _ in pairs)} of {len(pairs)} clean", clean),
        ]
    else:
        targets.append(Target("real conditions / naive at 0 %", f"median <= {TARGETS['real']}, worst <= {TARGETS['real_worst']}",
                              "n/a (leg not run)", None))
    ratio_target("journal overhead / floor", "overhead", TARGETS["overhead"])
    scale = sorted(by_leg.get("scale", []), key=lambda r: r.case.animals or 0)
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
    else:
        targets.append(Target("scale (time, RSS)", "flat within 1.2x, RSS <= 150 MB", "n/a (leg not run)", None))
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


def render(info: dict[str, str], rows: list[Row], targets: list[Target], options: argparse.Namespace) -> str:
    lines = [
        f"Benchmark of {info['date']} on {info['arch']}, {info['cpu']}, {info['cores']} cores, Python {info['python']};"
        f" load average at start {info['load']}; {options.repeat} repetition(s), medians"
        + (f"; real leg: {options.real_repeat} paired repetition(s)" if "real" in options.legs else "")
        + (f"; animal-sync flags: `{' '.join(options.sync_args)}`" if options.sync_args else "")
        + (f"; stalls {' '.join(options.stall_args)}" if options.stall_args else "; stalls 5-15 s")
        + ".",
        "",
        "| leg | client | animals | wall s | own s | s / 1k animals | client CPU s | client CPU s / 1k animals"
        " | simulator CPU s | peak RSS MB | journal B / animal | retries | POST tail s | simulator verdict |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        per_animal = row.median(lambda m: None if m.journal_bytes is None else m.journal_bytes / m.animals)
        lines.append(
            f"| {row.case.leg} | {row.case.label} | {_fmt(row.median(lambda m: m.animals), ',.0f')}"
            f" | {row.wall:.2f} | {_fmt(row.median(lambda m: m.own_seconds))} | {row.per_1000:.3f}"
            f" | {_fmt(row.median(lambda m: m.client_cpu), '.1f')} | {row.cpu_per_1000:.2f}"
            f" | {_fmt(row.median(lambda m: m.server_cpu), '.1f')}"
            f" | {row.rss:.1f} | {_fmt(per_animal, '.0f')} | {_fmt(row.median(lambda m: m.retries), '.0f')}"
            f" | {_fmt(row.median(lambda m: m.tail), '.1f')}"
            f" | {row.verdict()} |"
        )
    pairs = pair_ratios(rows)
    if pairs:
        lines += [
            "",
            "| real pair | seed | animals | sync s (chaos 2 %) | naive s (0 %) | ratio | sync verdict"
            " | naive verdict | CPU s / 1k: sync | CPU s / 1k: naive |",
            "|--:|--:|--:|--:|--:|--:|---|---|--:|--:|",
        ]
        for number, (sync, naive, ratio) in enumerate(pairs, 1):
            lines.append(
                f"| {number} | {sync.seed} | {sync.animals:,} | {sync.wall:.2f} | {naive.wall:.2f} | {ratio:.2f}"
                f" | {_verdict_word(sync)} | {_verdict_word(naive)}"
                f" | {sync.client_cpu / sync.animals * 1000:.2f} | {naive.client_cpu / naive.animals * 1000:.2f} |"
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
    cases: list[Case] = []
    if "floor" in options.legs:
        cases += [Case("floor", f"floor client, {t} threads", "floor", threads=t, animals=base) for t in options.floor_threads]
    if "overhead" in options.legs:
        cases.append(Case("overhead", "animal-sync run", "sync", animals=base))
    if "real" in options.legs:  # a pair: the same seed for both, run back to back (see the module docstring)
        cases += [
            Case("real", "animal-sync run, chaos 2 %", "sync", chaos=2.0, animals=base),
            Case("real", f"naive client, {NAIVE_THREADS} threads, chaos 0 %", "floor", chaos=0.0, animals=base,
                 threads=NAIVE_THREADS, strict_verdict=False),
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
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each leg but real (default 3)")
    parser.add_argument("--real-repeat", type=int, default=5, help="paired repetitions of the real leg (default 5)")
    parser.add_argument("--legs", default=",".join(LEGS), help="subset of floor,overhead,real,scale,shards")
    parser.add_argument("--scale", type=_ints, default=None, help="animal counts of the scale leg (default 20000,200000)")
    parser.add_argument("--floor-threads", type=_ints, default=[16, 32, 64], help="thread counts tried for the floor")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, short stalls, 1 repetition")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    parser.add_argument(
        "--sync-args", default="", help="extra flags for `animal-sync run`, e.g. '--workers 32' (one flag: --sync-args=--flag)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="kill a client after this many seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="where journals go (default: a temporary directory)")
    parser.add_argument("--floor-client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=32, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    options.legs = [leg.strip() for leg in options.legs.split(",") if leg.strip()]
    unknown = set(options.legs) - set(LEGS)
    if unknown:
        parser.error(f"unknown legs {sorted(unknown)}; known: {', '.join(LEGS)}")
    options.sync_args = shlex.split(options.sync_args)
    options.base_animals, options.stall_args = None, []
    if options.quick:
        options.repeat = options.real_repeat = 1
        options.base_animals = 1_000
        options.scale = options.scale or [2_000, 10_000]
        options.stall_args = ["--stall-min", "2", "--stall-max", "4"]
    options.scale = options.scale or [20_000, 200_000]
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse(argv)
    if options.floor_client:
        floor_client(options.floor_client, options.threads)
        return 0
    info = machine()
    cases = plan(options)
    rows = {case: Row(case) for case in cases}
    rounds = max(options.repeat, options.real_repeat if "real" in options.legs else 0)
    with tempfile.TemporaryDirectory(prefix="animal-sync-bench-", dir=options.workdir) as tmp:
        for rep in range(rounds):
            for case in cases:
                if rep >= (options.real_repeat if case.leg == "real" else options.repeat):
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
    table = render(info, list(rows.values()), evaluate(list(rows.values())), options)
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
