"""Helpers of the `serve` tests: journals made by real runs (or by the journal's own writes, for data no upstream
serves on demand), `serve`'s app on a real uvicorn socket on 127.0.0.1, and Debian packages the tests install."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from animal_sync.journal import Journal, RunState
from animal_sync.web import ServeConfig, listen, server

XSS_NAME = "<script>alert(1)</script>"


@functools.cache
def debian_package(binary: str, *packages: str) -> str | None:
    """Install the packages where `binary` is missing (root, apt-get); None when it is there, else why not."""
    if Path(binary).exists():
        return None
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return f"{binary} is missing and apt-get cannot install {' '.join(packages)} here (not root, or no apt)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        log.append(done.stdout[-300:] + done.stderr[-300:])
    if Path(binary).exists():
        return None
    return f"apt-get install {' '.join(packages)} did not bring {binary}: {' '.join(log)[-400:]}"


def crafted_journal(path: Path, names: dict[int, str], *, in_doubt: bool = False, finished: bool = True) -> Path:
    """A finished-looking run written through the journal's own writes: one page, these animals fetched with these
    names, all carried by batch 1, which was sent and is in doubt when `in_doubt` (a run the audit names); left
    `running` unless `finished`."""
    with Journal.open(path, exclusive=True) as journal:
        run = journal.start_run({"dry_run": False}, "http://127.0.0.1:9")
        ids = sorted(names)
        journal.record_page(run.id, 1, ids, total_pages=1)
        for animal_id, name in names.items():
            raw = json.dumps({"id": animal_id, "name": name, "born_at": None, "friends": ""})
            record = json.dumps({"id": animal_id, "name": name, "born_at": None, "friends": []}, sort_keys=True)
            journal.record_fetched(run.id, animal_id, raw, record, attempts=1)
        if in_doubt:
            with journal.transaction():
                batch_id = journal.create_batch(run.id, ids)
            batch = journal.batch(batch_id)
            journal.mark_withheld(batch)
            batch = journal.batch(batch_id)
            journal.mark_sending(batch)
            journal.mark_in_doubt(journal.batch(batch_id), "read timeout after 30 s")
        if finished:
            journal.end_run(run.id, RunState.FINISHED, {"message": "crafted"})
    return path


class LiveServer:
    """`serve`'s app on uvicorn in a thread, on a socket bound to 127.0.0.1 port 0; a context manager."""

    def __init__(self, config: ServeConfig) -> None:
        self.sock = listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.server = server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "serve did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
