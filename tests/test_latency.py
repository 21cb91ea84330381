"""Tests for animal_sync.client.latency: the GET cut follows the answers seen, within its floor and ceiling, and cannot get
stuck below the API's pace: repeated cuts raise it (issue 19)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from animal_sync.client import latency
from animal_sync.engine.attempt import RunOutcome
from animal_sync.config import Settings
from animal_sync.journal import Journal
from animal_sync.client.latency import CUTS_TO_RAISE, MIN_SAMPLES, RECOMPUTE_EVERY, AdaptiveCut
from animal_sync.engine.pipeline import start_run


def feed(cut: AdaptiveCut, seconds: float, count: int) -> None:
    for _ in range(count):
        cut.observe(seconds)


def test_the_cut_stays_at_the_ceiling_until_enough_answers_are_seen():
    cut = AdaptiveCut(floor=0.25, ceiling=1.0)
    feed(cut, 0.01, MIN_SAMPLES - 1)
    assert cut.seconds == 1.0


def test_fast_answers_bring_the_cut_down_to_the_floor():
    cut = AdaptiveCut(floor=0.25, ceiling=1.0)
    feed(cut, 0.01, MIN_SAMPLES)
    assert cut.seconds == 0.25


def test_the_cut_is_a_few_times_the_slow_end_of_the_answers():
    cut = AdaptiveCut(floor=0.05, ceiling=1.0)
    feed(cut, 0.01, MIN_SAMPLES)
    feed(cut, 0.1, RECOMPUTE_EVERY)  # a third of the window now answers in 100 ms: the p99 is 0.1
    assert abs(cut.seconds - 0.4) < 1e-9


def test_slow_answers_raise_the_cut_back_no_higher_than_the_ceiling():
    cut = AdaptiveCut(floor=0.25, ceiling=1.0)
    feed(cut, 0.01, MIN_SAMPLES)
    assert cut.seconds == 0.25
    feed(cut, 0.6, RECOMPUTE_EVERY)
    assert cut.seconds == 1.0


def test_a_floor_at_the_ceiling_keeps_the_cut_fixed():
    cut = AdaptiveCut(floor=1.0, ceiling=1.0)
    feed(cut, 0.01, MIN_SAMPLES * 2)
    assert cut.seconds == 1.0


def test_a_floor_above_the_ceiling_is_the_ceiling():
    cut = AdaptiveCut(floor=0.25, ceiling=0.15)  # tests and impatient users set --get-timeout below the floor
    feed(cut, 0.01, MIN_SAMPLES * 2)
    assert cut.seconds == 0.15


def test_answers_from_many_threads_are_all_counted():
    cut = AdaptiveCut(floor=0.01, ceiling=1.0)
    threads = [threading.Thread(target=feed, args=(cut, 0.05, MIN_SAMPLES)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert abs(cut.seconds - 0.2) < 1e-9


# --------------------------------------------------------------------------- repeated cuts raise the cut


def test_a_few_cut_tries_leave_the_cut_alone():
    """Stalls are about 1 in 100 tries: they are cut, and must not push the cut up."""
    cut = AdaptiveCut(floor=0.25, ceiling=4.0)
    feed(cut, 0.01, MIN_SAMPLES)
    for _ in range(20):  # 20 stalls among 2,000 answers, spread out
        feed(cut, 0.01, 99)
        cut.cut()
    assert cut.seconds == 0.25 and cut.raised == 0


def test_repeated_cuts_raise_the_cut_until_answers_come_back():
    cut = AdaptiveCut(floor=0.25, ceiling=4.0)
    feed(cut, 0.01, MIN_SAMPLES)
    assert cut.seconds == 0.25
    for _ in range(CUTS_TO_RAISE - 1):
        cut.cut()
    assert cut.seconds == 0.25
    cut.cut()
    assert cut.seconds == 1.0 and cut.raised == 1  # FACTOR-fold
    for _ in range(CUTS_TO_RAISE):
        cut.cut()
    assert cut.seconds == 4.0  # again, up to the ceiling and no further
    for _ in range(CUTS_TO_RAISE * 3):
        cut.cut()
    assert cut.seconds == 4.0


def test_after_a_raise_the_slower_answers_set_the_cut():
    cut = AdaptiveCut(floor=0.25, ceiling=4.0)
    feed(cut, 0.01, MIN_SAMPLES)
    for _ in range(CUTS_TO_RAISE):
        cut.cut()
    feed(cut, 0.5, RECOMPUTE_EVERY)  # the new pace, now answered: the percentile holds it
    assert abs(cut.seconds - 2.0) < 1e-9


def test_a_raise_is_not_undone_by_the_answers_that_were_already_due():
    cut = AdaptiveCut(floor=0.25, ceiling=4.0)
    feed(cut, 0.01, MIN_SAMPLES + RECOMPUTE_EVERY - 1)  # one answer short of the next percentile
    for _ in range(CUTS_TO_RAISE):
        cut.cut()
    assert cut.seconds == 1.0
    cut.observe(0.5)  # the first answer at the new pace: one sample of 150 is no p99 yet
    assert cut.seconds == 1.0
    feed(cut, 0.5, RECOMPUTE_EVERY - 1)
    assert abs(cut.seconds - 2.0) < 1e-9


def test_a_fixed_cut_is_not_raised():
    cut = AdaptiveCut(floor=1.0, ceiling=1.0)
    for _ in range(CUTS_TO_RAISE * 2):
        cut.cut()
    assert cut.seconds == 1.0


# --------------------------------------------------------------------------- a whole run when the pace jumps


class JumpingApi(ThreadingHTTPServer):
    """The Animals API on 127.0.0.1 (no chaos) whose every GET waits `slow` s instead of `fast` s once it has
    answered `jump_after` GETs: the server's pace jumps tenfold in the middle of a run."""

    daemon_threads = True

    def __init__(self, pages: int, fast: float, slow: float, jump_after: int) -> None:
        super().__init__(("127.0.0.1", 0), _JumpingHandler)
        self.pages, self.fast, self.slow, self.jump_after = pages, fast, slow, jump_after
        self.gets = 0
        self.delivered: Counter[int] = Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _JumpingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and `100 Continue`, as the real server's uvicorn
    server: JumpingApi

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the client cut this GET and left

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.gets += 1
            slow = self.server.gets > self.server.jump_after
        time.sleep(self.server.slow if slow else self.server.fast)
        path, _, query = self.path.partition("?")
        if path == "/animals/v1/animals":
            page = int(query.split("=")[1])
            items = [{"id": i, "name": f"a{i}", "born_at": None} for i in range(10 * (page - 1), 10 * page)]
            self._answer(200, {"page": page, "total_pages": self.server.pages, "items": items if page <= self.server.pages else []})
        elif path.startswith("/animals/v1/animals/"):
            animal_id = int(path.rsplit("/", 1)[1])
            self._answer(200, {"id": animal_id, "name": f"a{animal_id}", "born_at": None, "friends": ""})
        else:
            self._answer(200, "Hello!")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.delivered.update(item["id"] for item in body)
        self._answer(200, {"message": f"Helped {len(body)} find home"})


def test_a_tenfold_jump_in_the_api_pace_mid_run_fails_no_animal(tmp_path, monkeypatch):
    # Answers in 80 ms bring the cut down to about 4 x 80 ms; then every GET takes 800 ms, well above that cut.
    # Before repeated cuts raised the cut, every later GET was cut on all its tries and its animal failed.
    # The cut follows the median here, not the p99: a loaded machine's slow tail must not hide the jump.
    monkeypatch.setattr(latency, "QUANTILE", 0.5)
    pages = 25
    server = JumpingApi(pages, fast=0.08, slow=0.8, jump_after=150)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        settings = Settings(
            base_url=server.url, journal=tmp_path / "j.db", workers=16, retries=5, backoff=0,
            get_timeout=4.0, get_timeout_floor=0.1,
        )
        result = start_run(settings)
    finally:
        server.shutdown()
        server.server_close()
    assert server.gets > 150 + 100  # the run did meet the slow pace for a good while
    assert result.outcome is RunOutcome.CLEAN, result.message
    assert result.counts.get("failed", 0) == 0
    assert sorted(server.delivered) == list(range(10 * pages)) and set(server.delivered.values()) == {1}
    with Journal.open(settings.journal, readonly=True) as journal:
        retries = journal.counters(journal.last_run().id)
    assert retries.get("retry_read_timeout", 0) > 0  # GETs were cut at the old pace: the jump did bite
