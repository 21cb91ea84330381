"""`make conformance` as `make test` runs it: scripts/conformance.py against the bundled strict simulator.

The script is run as a user runs it (a child process, `python scripts/conformance.py`) and judged by its one
line of figures, which come from `audit --json`, and by the simulator's own ledger, which the line quotes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "conformance.py"
ANIMALS = 3_000


def conformance(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def figure(line: str, name: str) -> int:
    found = re.search(rf"\b{name} (\d+)\b", line)
    assert found, f"no {name!r} in {line!r}"
    return int(found.group(1))


@pytest.mark.slow
def test_one_sync_killed_three_times_delivers_every_animal_once_and_says_so_in_one_line(tmp_path: Path) -> None:
    done = conformance("--animals", str(ANIMALS), "--journal", str(tmp_path / "c"))
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("conformance: "), done.stdout
    line = lines[0]
    assert figure(line, "animals") == ANIMALS
    # Every animal is proven delivered, except those of a batch killed in flight that the API took anyway: the strict
    # API refuses its re-send, so it stays in doubt, named. The simulator's ledger shows that it did arrive, once.
    doubt = re.search(r"in doubt (\d+) \((\d+) animals\)", line)
    assert doubt, line
    batches, held = int(doubt.group(1)), int(doubt.group(2))
    assert figure(line, "delivered") == ANIMALS - held and (held > 0) == (batches > 0), line
    assert figure(line, "quarantined") == 0
    assert figure(line, "settled") == 0
    assert f"simulator delivered {ANIMALS} of {ANIMALS}, missing 0, wrong 0" in line
    steps = line.split("; exit codes ", 1)[1].split(";", 1)[0].split(", ")
    assert [step.split(" ")[0] for step in steps] == ["run", "resume", "resume", "resume", "audit"], line
    assert all(" -9 (killed " in step for step in steps[:3]), f"a planned kill did not land: {line}"
    assert steps[3] in ("resume 0", "resume 1") and steps[4] in ("audit 0", "audit 1"), line
    assert (tmp_path / "c" / "conformance.db").exists()


def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args in (["--bogus"], ["--api-url", "http://127.0.0.1:9", "--animals", "10"], ["--animals", "0"]):
        done = conformance(*args, "--journal", str(tmp_path / "c"), timeout=30)
        assert done.returncode == 2, args
        assert done.stdout == "" and done.stderr.startswith("conformance: ") and done.stderr.count("\n") == 1, done.stderr
        assert "usage: conformance.py" in done.stderr


def test_a_directory_that_already_holds_a_journal_is_refused_so_no_animal_is_delivered_twice(tmp_path: Path) -> None:
    (tmp_path / "conformance.db").write_bytes(b"")
    done = conformance("--journal", str(tmp_path), timeout=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "exists: a second sync would deliver every animal again" in done.stderr
    assert done.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["conformance.db"]
