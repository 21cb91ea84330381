"""End to end: 4 shard processes (the real CLI) at once against one strict simulator, one SIGKILLed mid-run and
resumed, then the merged audit of the 4 journals and the simulator's own verdict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from animal_sync.simulator import exactly_once
from conftest import assert_exactly_once, cli, query

SHARDS = 4
VICTIM = 2


def posted(journal: Path) -> int:
    rows = query(journal, "SELECT count(*) FROM animals WHERE state = 'posted'")  # [] until the table exists
    return rows[0][0] if rows else 0


def kill_with_no_body_in_flight(process: subprocess.Popen[bytes], journal: Path, target: int) -> None:
    """SIGKILL the shard once it has posted `target` animals, at an instant no batch of it is `sending`.

    The process is frozen (SIGSTOP) to read its journal: with no batch `sending`, every body it released has its
    answer journaled, and a batch `withheld` is provably unsent. A kill with a body in flight is in doubt by
    design (tests/test_e2e.py covers that); here the proof is that a shard resumes its own part exactly once.
    """
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, f"shard {VICTIM} ended (code {process.returncode}) before the planned kill"
        assert time.monotonic() < deadline, "no progress towards the planned kill"
        if posted(journal) >= target:
            os.kill(process.pid, signal.SIGSTOP)
            if not query(journal, "SELECT id FROM batches WHERE state = 'sending'"):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return
            os.kill(process.pid, signal.SIGCONT)
        time.sleep(0.005)


@pytest.mark.slow
def test_four_shards_at_once_one_killed_and_resumed_audit_as_one_exactly_once(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=2_000, chaos=2, stall_min=0.2, stall_max=0.6, strict=True)
    journals = [tmp_path / f"shard-{index}.db" for index in range(SHARDS)]
    common = ["--base-url", sim.url, "--get-timeout", "0.15", "--post-workers", "1", "--log-format", "json", "--quiet"]
    logs = [tmp_path / f"shard-{index}.log" for index in range(SHARDS)]
    processes = []
    for index, (journal, log) in enumerate(zip(journals, logs)):
        with log.open("wb") as errors:  # the child keeps its own copy of the descriptor
            processes.append(subprocess.Popen(
                cli("run", "--shard", f"{index}/{SHARDS}", "--journal", str(journal), *common),
                stdout=subprocess.DEVNULL, stderr=errors,
            ))
    kill_with_no_body_in_flight(processes[VICTIM], journals[VICTIM], target=200)
    assert processes[VICTIM].returncode == -signal.SIGKILL
    assert query(journals[VICTIM], "SELECT state FROM runs") == [("running",)]  # killed mid-run
    for index, process in enumerate(processes):
        if index != VICTIM:
            assert process.wait(timeout=300) == 0, logs[index].read_text()

    resumed = subprocess.run(
        cli("resume", "--journal", str(journals[VICTIM]), "--quiet"), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    # The resume kept its shard: the journal holds shard 2/4's pages, and only those.
    (settings,) = query(journals[VICTIM], "SELECT settings FROM runs")[0]
    assert json.loads(settings)["shard"] == f"{VICTIM}/{SHARDS}"
    pages = {page for (page,) in query(journals[VICTIM], "SELECT page FROM pages")}
    assert pages == set(range(VICTIM + 1, sim.total_animals // 10 + 1, SHARDS))

    flags = [flag for journal in journals for flag in ("--journal", str(journal))]
    merged = subprocess.run(cli("audit", *flags), capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert merged.stdout.splitlines()[-1].startswith(f"OK: all {SHARDS} shards present once")
    report = json.loads(subprocess.run(cli("audit", "--json", *flags), capture_output=True, text=True).stdout)
    assert report["ok"] and report["shard_count"] == SHARDS and report["total_pages"] == sim.total_animals // 10
    assert report["listed"] == report["delivered"] == sim.total_animals
    assert [item["audit"]["posted"] for item in report["journals"]] == [sim.total_animals // SHARDS] * SHARDS
    assert exactly_once(sim.verify())
    assert_exactly_once(sim)
