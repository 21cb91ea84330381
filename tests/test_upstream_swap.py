"""An upstream that lies mid-run: a restart with the same page count (another data set under the same ids), and a
page count that cannot be true (empty pages inside the claimed range). Both stop the run before it sends a batch
of what it cannot vouch for, with one line that names what it saw."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from animal_sync.config import Settings
from animal_sync.journal import Journal, RunState
from animal_sync.engine.pipeline import Progress, RunOutcome, start_run
from animal_sync.simulator import Simulator
from animal_sync.simulator.data import generate_animal
from conftest import run_cli

FAST = dict(workers=2, post_workers=1, batch_size=20, retries=3, get_timeout=2.0, post_timeout=10.0)


def _port(sim: Simulator) -> int:
    return int(sim.url.rsplit(":", 1)[1])


def test_a_restart_with_the_same_page_count_mid_run_posts_nothing_of_the_new_data_set(simulator, tmp_path: Path) -> None:
    before = simulator(animals=600, seed=1, strict=True)
    port = _port(before)
    swapped: list[Simulator] = []

    def swap(progress: Progress) -> None:
        # Some batches are out, most animals not yet fetched: the details fetched from here on are the new data set.
        if progress.posted >= 40 and not swapped:
            before.stop()
            swapped.append(simulator(animals=600, seed=2, strict=True, port=port))

    journal = tmp_path / "j.db"
    result = start_run(Settings(base_url=before.url, journal=journal, **FAST), on_progress=swap)

    assert swapped, "the run finished before the swap"
    assert (result.state, result.outcome) == (RunState.INTERRUPTED, RunOutcome.UPSTREAM_CHANGED), result.message
    assert "now lists other animals under the same ids" in result.message and "\n" not in result.message
    # Not one record of the new data set reached the new server: whatever it got (if anything) is the old data set's.
    after = swapped[0].verify()
    assert after["delivered"] == after["content_mismatches"], after
    with Journal.open(journal, readonly=True) as opened:
        rows = opened.db.execute("SELECT id, transformed FROM animals WHERE run_id = 1 AND state = 'posted'").fetchall()
    assert rows
    for animal_id, transformed in rows:  # every animal posted is seed 1's animal, never seed 2's
        assert json.loads(transformed)["name"] == generate_animal(1, animal_id)["name"], animal_id


class _Lying(BaseHTTPRequestHandler):
    """An API that claims a billion pages and has three."""

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if url.path == "/animals/v1/animals":
            page = int(parse_qs(url.query)["page"][0])
            items = [{"id": i, "name": f"A{i}", "born_at": None} for i in range(10 * (page - 1), 10 * page)] if page <= 3 else []
            self._json({"page": page, "total_pages": 1_000_000_000, "items": items})
        else:
            animal_id = int(url.path.rsplit("/", 1)[1])
            self._json({"id": animal_id, "name": f"A{animal_id}", "born_at": None, "friends": ""})

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posts += 1  # type: ignore[attr-defined]
        self._json({"message": "ok"})

    def _json(self, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_billion_pages_with_empty_pages_inside_stops_the_run_naming_them(tmp_path: Path, capsys) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Lying)
    server.posts = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, err = run_cli(capsys, "run", "--base-url", url, "--journal", str(tmp_path / "j.db"), "--quiet",
                                 "--workers", "2")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1, (out, err)
    lines = [line for line in err.strip().splitlines() if line.startswith("run 1 ")]  # the rest: --quiet's error log
    assert len(lines) == 1, err
    assert "claims 1000000000 pages, but page" in lines[0] and "listed no animals" in lines[0]
    assert " 4" in lines[0]  # the first empty page is named
    with Journal.open(tmp_path / "j.db", readonly=True) as opened:
        assert opened.listed_pages(1) == {1, 2, 3}  # no empty page journaled: a resume lists them again
