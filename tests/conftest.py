"""Shared fixtures and helpers: a real Animals API simulator on an ephemeral port, the CLI run in-process, the
journal read as an outside observer would, and the audit's and the simulator's verdicts asserted.

Helpers are imported by name (`from conftest import audited`); each exists here once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socketserver
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog

from animal_sync.cli import main
from animal_sync.config import Settings
from animal_sync.journal import Journal
from animal_sync.reports.audit import audit
from animal_sync.simulator import Simulator, SimulatorConfig
from continue_server import ContinueServer

FAST = dict(get_timeout=0.15, post_timeout=3.0, retries=12, backoff=0.01)  # a loopback API answers in milliseconds


def settings(url: str, journal: Path, **overrides: Any) -> Settings:
    """Settings for a run against a local test server: short timeouts, many quick retries; overrides win."""
    return Settings(base_url=url, journal=journal, **{**FAST, **overrides})


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The CLI in-process, as a person calls it: its exit code, stdout and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli(*args: str) -> list[str]:
    """The CLI as a child process's command line."""
    return [sys.executable, "-m", "animal_sync", *args]


def assert_one_line(err: str, says: str) -> None:
    """A person's error: one line, prefixed, saying `says`, with no traceback."""
    assert says in err, err
    assert err.startswith("animal-sync: ") and err.count("\n") == 1 and "Traceback" not in err, err


def audited(journal: Path) -> dict[str, Any]:
    """The audit of the journal's last run, read-only, as `animal-sync audit --json` reports it."""
    with Journal.open(journal, readonly=True) as opened:
        return audit(opened).to_json()


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """`run` and `resume` called in-process install their signal handlers in pytest itself: put pytest's back."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def copy_of(journal: Path, where: Path) -> Path:
    """A copy of a module-scoped journal for one test to tamper with, so the others keep the original."""
    copy = where / "j.db"
    shutil.copyfile(journal, copy)
    return copy


def tamper(journal: Path | Journal, sql: str, params: tuple[object, ...] = ()) -> None:
    """Change a journal behind the job's back, as a person or a faulty disk would: with plain sqlite3 for a
    file, or through an open Journal's own connection. A statement that changes no row is a broken test."""
    if isinstance(journal, Journal):
        with journal.transaction():
            assert journal.db.execute(sql, params).rowcount >= 1, sql
        return
    with closing(sqlite3.connect(journal)) as db, db:
        assert db.execute(sql, params).rowcount >= 1, sql


def query(journal: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the journal with plain sqlite3, read-only, the way an outside observer would (also mid-run)."""
    try:
        with closing(sqlite3.connect(f"{journal.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def in_doubt_ids(journal: Path) -> set[int]:
    """Every animal of a batch that was ever in doubt in this journal (read as an outside observer)."""
    rows = query(journal, "SELECT ids FROM batches WHERE in_doubt_at IS NOT NULL")
    return {animal_id for (ids,) in rows for animal_id in json.loads(ids)}


def delivered_ids(sim: Simulator) -> set[int]:
    """The ids this simulator's ledger holds as delivered: all but the missing and the faulted (never deliverable)."""
    verdict = sim.verify()
    assert len(verdict["missing_ids"]) == verdict["missing"], "missing_ids is capped: use fewer animals"
    return set(range(sim.total_animals)) - set(verdict["missing_ids"]) - set(verdict["faulted_ids"])


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "the condition",
    process: Any = None,
) -> None:
    """Poll `predicate` until it holds: an observable state, never a fixed sleep. Fails after `timeout` s, or
    at once if `process` (a subprocess.Popen) ends first, naming `what` it waited for."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process is None or process.poll() is None, f"the child ended (code {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.005)


def assert_exactly_once(sim: Simulator) -> None:
    """The simulator's own verdict: every animal delivered once, none twice, each with the right content."""
    verdict = sim.verify()
    assert verdict["missing"] == 0, verdict["missing_ids"][:20]
    assert verdict["duplicates_rejected"] == 0 and verdict["duplicates_delivered"] == 0, verdict["duplicate_ids"][:20]
    assert verdict["content_mismatches"] == 0, verdict["mismatch_examples"]
    assert verdict["delivered"] == sim.total_animals


@pytest.fixture
def simulator() -> Iterator[Callable[..., Simulator]]:
    """Factory: `sim = simulator(animals=250, strict=True)` starts a Simulator on 127.0.0.1, port 0.

    Overrides are SimulatorConfig fields. Unlike SimulatorConfig, chaos defaults to 0 here, so a
    test meets stalls and 5xx only when it asks for them (pass chaos=... or use sim.queue_chaos).
    """
    started: list[Simulator] = []

    def start(**overrides: Any) -> Simulator:
        sim = Simulator(SimulatorConfig(**{"port": 0, "chaos": 0.0, **overrides})).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def continuing(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ContinueServer]]:
    """Factory: a raw server that sends 100 Continue only when its handler starts reading the body, as uvicorn does."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    servers: list[ContinueServer] = []

    def start(**kwargs: Any) -> ContinueServer:
        servers.append(ContinueServer(**kwargs).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A CLI test configures structlog with the stderr of its own capture; later tests must not inherit it."""
    yield
    structlog.reset_defaults()


class Trickler(socketserver.ThreadingTCPServer):
    """An HTTP server on 127.0.0.1 that answers slowly on purpose: a byte every `pause` seconds.

    `script` holds one mode per request, then "normal": "headers" trickles the status line and headers,
    "body" sends the headers at once and trickles the body; both go on for up to `length` seconds. Only
    real sockets can show this: each byte arrives well within any read timeout, so only a deadline ends it.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, pause: float = 0.05, length: float = 30.0) -> None:
        super().__init__(("127.0.0.1", 0), _TrickleHandler)
        self.pause, self.length = pause, length
        self.script: deque[str] = deque()
        self.bodies: Callable[[str], bytes] = lambda path: b'{"page": 1, "total_pages": 1, "items": []}'
        self.seen: list[str] = []
        self.released = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _TrickleHandler(socketserver.StreamRequestHandler):
    server: Trickler

    def handle(self) -> None:
        request_line = self.rfile.readline().decode("latin-1")
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        path = request_line.split(" ")[1] if " " in request_line else "/"
        self.server.seen.append(path)
        mode = self.server.script.popleft() if self.server.script else "normal"
        body = self.server.bodies(path)
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        try:
            if mode == "headers":
                self._trickle(head.encode() + b" " * 10_000)
            elif mode == "body":
                self.wfile.write(head.encode())
                self._trickle(b" " * 10_000)
            else:
                self.wfile.write(head.encode() + body)
        except OSError:
            pass  # the client hung up: that is the point

    def _trickle(self, data: bytes) -> None:
        ends = time.monotonic() + self.server.length
        for index in range(len(data)):
            if time.monotonic() > ends or self.server.released.is_set():
                return
            self.wfile.write(data[index : index + 1])
            self.wfile.flush()
            time.sleep(self.server.pause)


@pytest.fixture
def trickler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Trickler]:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = Trickler()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


@contextmanager
def unplugged_mid_run(sim: Simulator, journal: Path) -> Iterator[None]:
    """Stop `sim` from a thread once `journal` holds a posted batch: an API that answered, then went away.

    (`query` reads `[]` while the writer is still creating the journal.)"""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if journal.exists() and query(journal, "SELECT count(*) FROM batches WHERE state = 'posted'") not in ([], [(0,)]):
                sim.stop()
                return
            done.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
