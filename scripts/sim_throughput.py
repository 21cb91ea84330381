"""Measure the simulator's requests/second with keep-alive clients in other processes, and its CPU per animal.

The server runs in its own process (`animal-sync simulate`), so the client's work does
not share its GIL. Usage: .venv/bin/python scripts/sim_throughput.py [--threads 4] [--processes 2]
[--seconds 5] [--wrk] [--cpu [--cpu-repeat 3]]. --wrk also runs wrk (apt-get install -y wrk) against the same
server. --cpu serves bench.py's naive 32-thread floor client one whole run (list, every detail, batches of 100)
on a strict simulator at 0 % chaos, and prints the simulator process's own CPU seconds (user + system, from
/proc) per 1,000 animals: the real server spends 0.575-0.62 on the same client.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from animal_sync.simulator import SimulatorProcess

__all__ = ["main"]

_WRK_SCRIPT = """
request = function()
  return wrk.format(nil, "/animals/v1/animals/" .. math.random(0, {total} - 1))
end
"""


def _client_thread(url: str, total: int, deadline: float, counts: list[int], errors: list[int]) -> None:
    rng = random.Random()
    done = failed = 0
    with requests.Session() as session:
        while time.perf_counter() < deadline:
            response = session.get(f"{url}/animals/v1/animals/{rng.randrange(total)}", timeout=5)
            if response.status_code == 200:
                done += 1
            else:
                failed += 1
    counts.append(done)
    errors.append(failed)


def _client_process(url: str, total: int, threads: int, seconds: float, out: multiprocessing.Queue) -> None:
    deadline = time.perf_counter() + seconds
    counts: list[int] = []
    errors: list[int] = []
    workers = [threading.Thread(target=_client_thread, args=(url, total, deadline, counts, errors)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((sum(counts), sum(errors)))


def measure_python(url: str, total: int, processes: int, threads: int, seconds: float) -> tuple[float, int]:
    """Requests/second of `processes` x `threads` keep-alive requests.Sessions, and the non-200 count."""
    out: multiprocessing.Queue = multiprocessing.Queue()
    started = time.perf_counter()
    children = [
        multiprocessing.Process(target=_client_process, args=(url, total, threads, seconds, out))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    results = [out.get() for _ in children]
    elapsed = time.perf_counter() - started
    for child in children:
        child.join()
    # Elapsed includes process start-up, so this slightly understates the server.
    return sum(r[0] for r in results) / elapsed, sum(r[1] for r in results)


def measure_wrk(url: str, total: int, seconds: float, connections: int) -> str:
    """wrk's summary line (Requests/sec), or why it could not run."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return "wrk not installed (apt-get install -y wrk)"
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT.format(total=total))
        script.flush()
        result = subprocess.run(
            [wrk, "-t2", f"-c{connections}", f"-d{int(seconds)}s", "-s", script.name, url],
            capture_output=True, text=True, check=False,
        )
    lines = [line.strip() for line in result.stdout.splitlines() if "Requests/sec" in line or "Non-2xx" in line]
    return "; ".join(lines) or result.stdout + result.stderr


REAL_SERVER_CPU = (0.575, 0.62)  # CPU seconds per 1,000 animals, the real server serving the floor client
_BENCH = Path(__file__).with_name("bench.py")


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_cpu(seed: int, threads: int = 32) -> tuple[float, int, float]:
    """One floor-client run on a fresh strict simulator: (server CPU s per 1,000 animals, animals, wall seconds)."""
    with SimulatorProcess("--chaos", "0", "--strict", "--seed", str(seed)) as server:
        assert server.process is not None
        total = server.verify()["animals"]
        before = _process_cpu(server.process.pid)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, str(_BENCH), "--floor-client", server.url, "--threads", str(threads)],
            check=True, stdout=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - started
        cpu = _process_cpu(server.process.pid) - before
        verdict = server.verify()
        if verdict["delivered"] != total:
            raise SystemExit(f"the floor client delivered {verdict['delivered']} of {total}")
    return cpu / total * 1000, total, wall


def main() -> None:
    """Start a simulator, load it, print requests/second, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4, help="client threads per process")
    parser.add_argument(
        "--processes", type=int, default=2, help="client processes (one requests process tops out near 750/s)"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wrk", action="store_true", help="also measure with wrk")
    parser.add_argument("--wrk-connections", type=int, default=32)
    parser.add_argument("--cpu", action="store_true", help="the server's CPU per 1,000 animals (the floor client)")
    parser.add_argument("--cpu-repeat", type=int, default=3)
    args = parser.parse_args()

    if args.cpu:
        figures = []
        for rep in range(args.cpu_repeat):
            per_1000, total, wall = measure_cpu(args.seed + rep)
            figures.append(per_1000)
            print(f"run {rep + 1}: {per_1000:.3f} server CPU-s per 1,000 animals ({total} animals, {wall:.1f} s wall)")
        low, high = REAL_SERVER_CPU
        median = sorted(figures)[len(figures) // 2]
        print(
            f"simulator (uvicorn + Starlette + pydantic): median {median:.3f} CPU-s per 1,000 animals; "
            f"real server {low}-{high}; ratio {median / ((low + high) / 2):.2f}"
        )
        return

    with SimulatorProcess("--chaos", "0", "--seed", str(args.seed)) as server:
        url, total = server.url, server.verify()["animals"]
        rate, failures = measure_python(url, total, args.processes, args.threads, args.seconds)
        print(
            f"python requests: {rate:,.0f} requests/s "
            f"({args.processes} process(es) x {args.threads} keep-alive sessions, {args.seconds:g}s, "
            f"{failures} non-200)"
        )
        if args.wrk:
            print(f"wrk ({args.wrk_connections} connections): {measure_wrk(url, total, args.seconds, args.wrk_connections)}")


if __name__ == "__main__":
    main()
