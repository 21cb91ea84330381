"""Start-up: `run` loads only what a run needs before its first request (issue 19).

Structural, not timed: a child process runs the real CLI until it opens its first connection, and lists the modules
loaded by then. The reports, the HTML page, the simulator and Rich's live bars must not be among them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Loaded by then, each would cost a run start-up time for something it never uses before its first request.
NOT_BEFORE_FIRST_REQUEST = (
    "animal_sync.reports.audit",  # reports: a finished run's resume asks them, a run does not
    "animal_sync.reports.status",
    "animal_sync.reports.export",  # its --format and --what values live in reports.formats, which a run may load
    "animal_sync.reports.settle",
    "animal_sync.journal.queries",  # the reports' reads and the live page's, re-exported lazily by the journal
    "animal_sync.journal.browse",
    "dotenv",  # only where a .env file is (the child runs in an empty directory)
    "animal_sync.cli.render",
    "animal_sync.reports.union",
    "animal_sync.cli.watch",
    "animal_sync.reports.html_report",
    "animal_sync.simulator.app",  # the served simulator (its package and `data`, the --fault kinds, are light)
    "animal_sync.simulator.server",
    "animal_sync.simulator.models",
    "animal_sync.simulator.process",
    "animal_sync.cli.demo",
    "animal_sync.web",  # serve and the metrics: loaded only when asked for
    "prometheus_client",
    "animal_sync.cli.bars",  # Rich's live display: only for bars on a terminal
    "rich.progress",
    "rich.live",
    "uvicorn",
    "starlette",
)

# Patches the socket's connect to report the loaded modules and end the process: the first request never leaves.
CHILD = """
import json, os, socket, sys
def first_request(self, address):
    sys.__stdout__.write(json.dumps(sorted(sys.modules)))
    sys.__stdout__.flush()
    os._exit(0)
socket.socket.connect = first_request
from animal_sync.cli import main
main(sys.argv[1:])
"""


def modules_at_first_request(tmp_path: Path, *flags: str) -> set[str]:
    args = ["run", "--base-url", "http://127.0.0.1:9", "--journal", str(tmp_path / "j.db"), *flags]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "flags",
    [
        ("--quiet", "--log-format", "json"),  # the bench's and cron's run
        ("--log-format", "json"),  # not quiet, stderr not a terminal: progress as log events, no bars
        ("--progress", "log",),
    ],
)
def test_run_loads_no_report_simulator_or_bars_before_its_first_request(tmp_path: Path, flags: tuple[str, ...]) -> None:
    loaded = modules_at_first_request(tmp_path, *flags)
    assert "requests" in loaded and "animal_sync.engine.pipeline" in loaded  # the child did reach the first request
    early = sorted(name for name in loaded if name.startswith(NOT_BEFORE_FIRST_REQUEST))
    assert early == []


def test_importing_the_cli_loads_no_engine_report_or_simulator() -> None:
    """`--help`, a bad flag and `status` pay nothing for the engine or the simulator either."""
    code = "import json, sys; import animal_sync.cli; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout))
    heavy = ("animal_sync.engine.pipeline", "animal_sync.client.api", "requests", *NOT_BEFORE_FIRST_REQUEST)
    assert sorted(name for name in loaded if name.startswith(heavy)) == []


def test_the_journal_still_offers_every_name_it_lists_the_lazy_ones_included() -> None:
    """queries.py and browse.py load on first use (PEP 562), and their names are the very same objects."""
    import animal_sync.journal as journal
    from animal_sync.journal import browse, queries

    for name in journal.__all__:
        assert getattr(journal, name) is not None, name
    assert journal.iter_animals is queries.iter_animals and journal.find_animals is browse.find_animals
    with pytest.raises(AttributeError):
        journal.no_such_name  # noqa: B018


# The process entry (`python -m animal_sync`, the console script) as the test above, reporting the collector instead.
COLLECTOR_CHILD = """
import gc, json, os, runpy, socket, sys
def first_request(self, address):
    sys.__stdout__.write(json.dumps({"frozen": gc.get_freeze_count(), "enabled": gc.isenabled()}))
    sys.__stdout__.flush()
    os._exit(0)
socket.socket.connect = first_request
sys.argv[0] = "animal-sync"
runpy.run_module("animal_sync", run_name="__main__")
"""


def test_the_cli_process_freezes_what_its_imports_made_and_collects_again_after(tmp_path: Path) -> None:
    """Start-up's objects are frozen out of the collector's sight (gc.freeze), and the collector runs for the run."""
    args = ["run", "--base-url", "http://127.0.0.1:9", "--journal", str(tmp_path / "j.db"), "--quiet", "--log-format", "json"]
    done = subprocess.run(
        [sys.executable, "-c", COLLECTOR_CHILD, *args], capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    collector = json.loads(done.stdout)
    assert collector["enabled"] and collector["frozen"] > 10_000, collector


def test_importing_the_cli_leaves_the_collector_alone_and_the_console_script_starts_like_python_m() -> None:
    """Only a process started as the CLI freezes anything: a program or a test that imports it keeps its collector."""
    code = "import gc, json; import animal_sync.cli; print(json.dumps([gc.get_freeze_count(), gc.isenabled()]))"
    frozen, enabled = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert (frozen, enabled) == (0, True)
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="animal-sync")
    assert script.value == "animal_sync.__main__:main"
