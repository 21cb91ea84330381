"""Integration: the whole pipeline against a live simulator on 127.0.0.1, with a real journal file."""

from __future__ import annotations

import json
from datetime import datetime
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from continue_server import ContinueServer, Fate
from structlog.testing import capture_logs

from animal_sync.engine import upstream
from animal_sync.engine.listing import OPENING_PAGES
from animal_sync.config import Settings
from animal_sync.engine.contact import Unanswered
from animal_sync.errors import ApiNotReached, JournalError, UnfinishedRun
from animal_sync.journal import BatchState, Journal, RunState
from animal_sync.engine.pipeline import Progress, RunOutcome, RunResult, resume_run, start_run
from animal_sync.reports.audit import audit
from animal_sync.cli.render import render_audit
from animal_sync.reports.html_report import render_html, report_data
from animal_sync.reports.status import status
from animal_sync.simulator import Chaos, Simulator, SimulatorConfig
from conftest import FAST, assert_exactly_once, audited, query, settings, wait_until



@pytest.mark.slow
def test_high_chaos_run_is_exactly_once_and_audits_clean(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=1_240, chaos=20, stall_min=0.2, stall_max=0.4, strict=True)
    journal = tmp_path / "j.db"

    result = start_run(settings(sim.url, journal))

    assert (result.state, result.outcome) == (RunState.FINISHED, RunOutcome.CLEAN), audited(journal)["exceptions"]
    assert_exactly_once(sim)
    report = audited(journal)
    assert report["ok"] and report["posted"] == 1_240 and report["records_rechecked"] == 1_240
    with Journal.open(journal, readonly=True) as opened:
        figures = status(opened).to_json()
    assert figures["retries"].get("read_timeout", 0) > 0  # stalls were cut short, not waited on
    assert sum(v for k, v in figures["retries"].items() if k.startswith("http_5")) > 0
    assert figures["batches"]["posted"] == 13 and figures["pages"] == {"listed": 124, "total": 124, "owned": 124}


def test_partial_last_batch_and_small_batch_size(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=90, strict=True)
    result = start_run(settings(sim.url, tmp_path / "j.db", batch_size=7))
    assert result.outcome is RunOutcome.CLEAN
    assert_exactly_once(sim)
    assert sim.verify()["posts"] == 13  # 12 full batches of 7 and one of 6


def _stop_when(posted_at_least: int, stop: threading.Event):
    def on_progress(progress: Progress) -> None:
        if progress.posted >= posted_at_least:
            stop.set()

    return on_progress


def test_stopped_run_refuses_a_new_run_and_resumes_exactly_once(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=2_000, chaos=5, stall_min=0.1, stall_max=0.2, strict=True)
    journal = tmp_path / "j.db"
    stop = threading.Event()

    first = start_run(settings(sim.url, journal), stop=stop, on_progress=_stop_when(300, stop))

    assert (first.state, first.outcome) == (RunState.INTERRUPTED, RunOutcome.STOPPED)
    assert 300 <= sim.verify()["delivered"] < 2_000
    with pytest.raises(UnfinishedRun, match="holds unfinished run 1"):
        start_run(settings(sim.url, journal))
    second = resume_run(journal)
    assert (second.state, second.outcome) == (RunState.FINISHED, RunOutcome.CLEAN), second.message
    assert_exactly_once(sim)
    report = audited(journal)
    assert report["ok"] and report["resent_after_doubt"] == []


def test_abandon_starts_a_new_run_knowingly(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=300)
    journal = tmp_path / "j.db"
    stop = threading.Event()
    start_run(settings(sim.url, journal), stop=stop, on_progress=_stop_when(100, stop))

    second = start_run(settings(sim.url, journal), abandon=True)

    assert second.run_id == 2 and second.outcome is RunOutcome.CLEAN
    with Journal.open(journal, readonly=True) as opened:
        assert opened.run(1).state is RunState.ABANDONED


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_api_never_reached_begins_no_run_and_the_same_run_works_once_it_answers(tmp_path: Path) -> None:
    port = _free_port()
    journal = tmp_path / "j.db"
    seen: list[Unanswered] = []

    with pytest.raises(ApiNotReached) as raised:
        start_run(settings(f"http://127.0.0.1:{port}", journal, retries=2), reach_within=1.5, on_waiting=seen.append)

    assert raised.value.url == f"http://127.0.0.1:{port}" and raised.value.cause == "connection refused"
    assert seen and seen[0].cause == "connection refused" and seen[0].seconds_left > seen[-1].seconds_left
    assert query(journal, "SELECT count(*) FROM runs") == [(0,)]  # nothing half-begun blocks the next run
    with Simulator(SimulatorConfig(port=port, animals=250, chaos=0, strict=True)) as sim:
        back = start_run(settings(f"http://127.0.0.1:{port}", journal))
        assert back.outcome is RunOutcome.CLEAN, back.message
        assert_exactly_once(sim)
    assert audited(journal)["ok"]


def test_limit_syncs_only_the_first_animals(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=500, strict=True)
    result = start_run(settings(sim.url, tmp_path / "j.db", limit=25))
    assert result.outcome is RunOutcome.CLEAN and result.counts == {"posted": 25}
    assert sim.verify()["delivered"] == 25
    report = audited(tmp_path / "j.db")
    assert report["ok"] and report["discovered"] == 25


def test_dry_run_posts_nothing_and_audit_says_so(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=120, strict=True)
    result = start_run(settings(sim.url, tmp_path / "j.db", dry_run=True))
    assert result.outcome is RunOutcome.CLEAN and "dry run" in result.message
    assert sim.verify()["delivered"] == 0 and sim.verify()["posts"] == 0
    report = audited(tmp_path / "j.db")
    assert report["ok"] and report["dry_run"] and report["posted"] == 0


def test_an_animal_s_attempts_are_its_detail_fetches_retries_included(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=10, strict=True)
    # The listing passes (a one-worker run opens with two pages: OPENING_PAGES bounded by its page slots, the second
    # past the total); the first detail fails twice.
    sim.queue_chaos(Chaos.NONE, Chaos.NONE, Chaos.FAIL, Chaos.FAIL, method="GET")
    journal = tmp_path / "j.db"
    result = start_run(settings(sim.url, journal, workers=1))
    assert result.outcome is RunOutcome.CLEAN, result.message
    attempts = sorted(n for (n,) in query(journal, "SELECT attempts FROM animals"))
    assert attempts == [1] * 9 + [3]  # 1 + 2 retries for the one that failed twice, 1 for every other


def test_a_detail_that_never_answers_records_every_fetch_it_cost(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=10, strict=True)
    sim.queue_chaos(Chaos.NONE, Chaos.NONE, *[Chaos.FAIL] * 3, method="GET")  # the two opening pages pass
    journal = tmp_path / "j.db"
    result = start_run(settings(sim.url, journal, workers=1, retries=2))
    assert result.outcome is RunOutcome.EXCEPTIONS
    assert query(journal, "SELECT attempts FROM animals WHERE state = 'failed'") == [(3,)]


def test_a_malformed_detail_is_quarantined_with_its_reason_and_the_rest_goes_on(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=40, strict=True, faults={13: "wrong_id"})
    journal = tmp_path / "j.db"
    result = start_run(settings(sim.url, journal, retries=2))
    assert result.outcome is RunOutcome.EXCEPTIONS
    report = audited(journal)
    assert report["exception_counts"] == {"quarantined": 1}
    assert "id mismatch" in report["exceptions"]["quarantined"][0]["reason"]
    assert sim.verify()["delivered"] == 39


def test_a_poisoned_batch_is_split_until_only_the_rejected_record_fails(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=30, strict=True)
    journal = tmp_path / "j.db"
    start_run(settings(sim.url, journal, dry_run=True))
    # Corrupt one stored record so the API refuses any batch holding it with 422.
    with Journal.open(journal) as opened, opened.transaction():
        opened.db.execute("UPDATE animals SET transformed = replace(transformed, '\"friends\":', '\"friends\":7,\"x\":') WHERE id = 5")
        opened.db.execute("UPDATE runs SET settings = json_set(settings, '$.dry_run', json('false'))")

    result = resume_run(journal)

    assert result.outcome is RunOutcome.EXCEPTIONS and result.counts == {"posted": 29, "failed": 1}
    verdict = sim.verify()
    assert verdict["delivered"] == 29 and verdict["missing_ids"] == [5] and verdict["duplicates_rejected"] == 0
    report = audited(journal)
    assert report["exception_counts"] == {"failed": 1}
    [failed] = report["exceptions"]["failed"]
    assert failed["id"] == 5 and "422" in failed["reason"]
    with Journal.open(journal, readonly=True) as opened:
        refused = opened.batches(1, BatchState.FAILED)
    # ids 0-29 -> 0-14 -> 0-6 -> 3-6 -> 5-6 -> 5: each refused batch kept its answer and was sent once (no blind retry).
    assert [len(b.ids) for b in refused] == [30, 15, 7, 4, 2, 1]
    assert all(b.response_status == 422 and b.attempts == 1 and "detail" in b.response_body for b in refused)


def test_a_post_whose_answer_is_lost_is_in_doubt_held_or_resent_and_a_refusal_is_named(simulator, tmp_path: Path) -> None:
    """The API stalls the first POST past the client's read timeout, then delivers it anyway."""
    sim = simulator(animals=250, strict=True, stall_min=0.6, stall_max=0.6)
    sim.queue_chaos(Chaos.STALL, method="POST")
    journal = tmp_path / "j.db"

    # The first POST, alone in flight, meets a server not yet known to speak 100-continue: its body goes after
    # the 0.2 s wait, and the stall outlasts the read timeout.
    first = start_run(settings(sim.url, journal, post_timeout=0.2, get_timeout=0.2, retries=2, post_workers=1))

    assert first.outcome is RunOutcome.EXCEPTIONS and first.in_doubt == (1,) and first.counts["posted"] == 150
    wait_until(lambda: sim.verify()["delivered"] == 250)  # the stalled POST was handled after all
    held = resume_run(journal, overrides={"resend_in_doubt": False})
    assert held.outcome is RunOutcome.EXCEPTIONS and held.in_doubt == (1,)
    assert sim.verify()["posts"] == 3 and sim.verify()["duplicates_rejected"] == 0  # held: not re-sent

    resent = resume_run(journal)  # at-least-once: re-send; the strict API refuses the repeat

    assert resent.outcome is RunOutcome.EXCEPTIONS and resent.in_doubt == (1,)
    verdict = sim.verify()
    assert verdict["missing"] == 0 and verdict["duplicates_delivered"] == 0
    with Journal.open(journal, readonly=True) as opened:
        [batch] = opened.batches(1, BatchState.IN_DOUBT)
    # Every repeat the API saw belongs to the named batch (it stops at the first one, taking ids one at a time).
    assert verdict["duplicate_ids"] and set(verdict["duplicate_ids"]) <= set(batch.ids)
    report = audited(journal)
    assert report["exception_counts"] == {"in_doubt": 1}
    [named] = report["exceptions"]["in_doubt"]
    assert named["batch_id"] == 1 and "on a re-send" in named["reason"] and "repeat" in named["reason"] and named["response_status"] == 500


def test_an_in_doubt_batch_the_api_never_handled_is_resent_and_posted_at_least_once(simulator, tmp_path: Path) -> None:
    """As if the API had lost the stalled POST: the re-send is the only delivery, but the journal cannot know
    that, so the batch is named "at least once" (exit 1, in the run and in the audit) until a person settles it."""
    sim = simulator(animals=100, strict=True, stall_min=0.5, stall_max=0.5)
    sim.queue_chaos(Chaos.STALL, method="POST")
    journal = tmp_path / "j.db"
    first = start_run(settings(sim.url, journal, post_timeout=0.1, retries=2))
    assert first.in_doubt == (1,)
    wait_until(lambda: sim.stalled_requests == 0)
    sim.reset_verification()  # forget the stalled delivery: as if the API had dropped it

    again = resume_run(journal, overrides={"post_timeout": 5.0})  # a slow answer under load is not a new doubt

    assert again.outcome is RunOutcome.EXCEPTIONS and again.in_doubt == () and "1 batch posted at least once after doubt (1)" in again.message
    assert_exactly_once(sim)
    report = audited(journal)
    assert not report["ok"] and report["resent_after_doubt"] == [1]
    assert report["exception_counts"] == {"at_least_once": 1}
    [named] = report["exceptions"]["at_least_once"]
    assert (named["batch_id"], named["animals"], named["attempts"]) == (1, 100, 2)


# --- the upstream changing under a run --------------------------------------------------------------------------


def _port(sim: Simulator) -> int:
    return int(sim.url.rsplit(":", 1)[1])


def _interrupted_after(sim: Simulator, journal: Path, posted: int) -> int:
    """Stop a run once `posted` animals are delivered, then stop its simulator; return the port it served on."""
    port = _port(sim)
    stop = threading.Event()
    first = start_run(settings(sim.url, journal), stop=stop, on_progress=_stop_when(posted, stop))
    assert first.outcome is RunOutcome.STOPPED
    sim.stop()
    return port


@pytest.mark.parametrize(
    ("restarted", "says"),
    [
        (dict(animals=300, seed=2), "page 1 now lists other animals under the same ids"),
        (dict(animals=150, seed=1), "total_pages was 30, the API now says 15 (fewer pages: ids it listed are gone)"),
    ],
)
def test_a_resume_against_a_new_data_set_stops_with_exit_1_and_posts_nothing(simulator, tmp_path: Path, restarted, says) -> None:
    before = simulator(animals=300, seed=1, strict=True)
    journal = tmp_path / "j.db"
    port = _interrupted_after(before, journal, 100)
    after = simulator(port=port, strict=True, **restarted)

    result = resume_run(journal)

    assert (result.state, result.outcome) == (RunState.INTERRUPTED, RunOutcome.UPSTREAM_CHANGED)
    assert says in result.message and "animal-sync" not in result.message  # the CLI names what comes next
    assert after.verify()["posts"] == 0 and after.verify()["delivered"] == 0
    with Journal.open(journal, readonly=True) as opened:
        figures = status(opened).to_json()
        assert opened.run(1).outcome["upstream_changed"] in result.message
    assert says in figures["message"]
    report = audited(journal)
    assert not report["ok"] and report["exceptions"]["upstream_changed"] == [{"reason": result.message.split(": ", 1)[1].split(". Its")[0]}]
    again = resume_run(journal)  # every resume says the same, until the run is abandoned
    assert again.outcome is RunOutcome.UPSTREAM_CHANGED and says in again.message and after.verify()["posts"] == 0


def test_a_resume_against_the_same_data_set_passes_the_check_and_finishes(simulator, tmp_path: Path) -> None:
    before = simulator(animals=300, seed=1, strict=True)
    journal = tmp_path / "j.db"
    port = _interrupted_after(before, journal, 100)
    delivered = before.verify()["delivered"]
    after = simulator(animals=300, seed=1, strict=True, port=port)

    result = resume_run(journal)

    assert (result.state, result.outcome) == (RunState.FINISHED, RunOutcome.CLEAN), result.message
    assert after.verify()["delivered"] + delivered >= 300


def _resumed_while_checks_fail(simulator, journal: Path, checks: int) -> tuple[RunResult, Simulator, int]:
    """Interrupt a run, bring the same data set back, and fail its resume's first `checks` checks (2 retries each)."""
    before = simulator(animals=300, seed=1, strict=True)
    port = _interrupted_after(before, journal, 100)
    after = simulator(animals=300, seed=1, strict=True, port=port)
    after.queue_chaos(*[Chaos.FAIL] * checks * 3, method="GET")  # nothing else is asked for before a check passes
    result = resume_run(journal, overrides={"retries": 2})
    assert after.drop_queued_chaos() == 0, "every forced failure fell on a check"
    return result, after, before.verify()["delivered"]


def test_a_resume_whose_check_fails_for_a_while_tries_it_again_and_finishes(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "RECHECK_SECONDS", 0.2)

    result, after, delivered = _resumed_while_checks_fail(simulator, tmp_path / "j.db", upstream.CHECK_TRIES - 1)

    assert (result.state, result.outcome) == (RunState.FINISHED, RunOutcome.CLEAN), result.message
    assert after.verify()["delivered"] + delivered >= 300


def test_a_resume_whose_check_keeps_failing_stops_having_fetched_and_posted_nothing(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "RECHECK_SECONDS", 0.2)

    result, after, _ = _resumed_while_checks_fail(simulator, tmp_path / "j.db", upstream.CHECK_TRIES)

    assert (result.state, result.outcome) == (RunState.INTERRUPTED, RunOutcome.CHECK_FAILED), result.message
    assert result.message.startswith("page 1 could not be listed again to check the data set (")
    assert f"{upstream.CHECK_TRIES} checks failed)" in result.message
    assert after.verify()["posts"] == 0 and after.verify()["delivered"] == 0


def test_a_restart_with_fewer_animals_mid_run_stops_it_instead_of_failing_animals_one_by_one(simulator, tmp_path: Path) -> None:
    before = simulator(animals=400, seed=1, strict=True)
    port = _port(before)
    restarted: list[Simulator] = []

    def restart(progress: Progress) -> None:
        # The step that lists the last page has only just asked for its ids: fetches are certainly outstanding.
        if progress.pages_listed == 40 and not restarted:
            assert progress.fetched < 400
            before.stop()
            restarted.append(simulator(animals=100, seed=1, strict=True, port=port))

    result = start_run(settings(before.url, tmp_path / "j.db", retries=3), on_progress=restart)

    assert restarted, "the listing never finished"
    assert (result.state, result.outcome) == (RunState.INTERRUPTED, RunOutcome.UPSTREAM_CHANGED), result.message
    assert "total_pages was 40, the API now says 10 (fewer pages" in result.message
    assert "stopped answering" not in result.message


def test_a_restart_with_fewer_animals_once_all_are_fetched_is_found_by_the_refused_batches(simulator, tmp_path: Path) -> None:
    before = simulator(animals=400, seed=1, strict=True, stall_min=8, stall_max=8)
    before.queue_chaos(Chaos.STALL, method="POST")  # the one POST out holds the rest back until the restart
    port = _port(before)
    restarted: list[Simulator] = []

    def restart(progress: Progress) -> None:
        # Every animal is fetched, so no detail can fail: only the batches still to send meet the new data set.
        if progress.fetched == 400 and progress.posted == 0 and not restarted:
            before.stop()
            restarted.append(simulator(animals=100, seed=1, strict=True, port=port))

    run = settings(before.url, tmp_path / "j.db", retries=3, post_timeout=10.0, post_workers=1)
    result = start_run(run, on_progress=restart)

    assert restarted, "the stalled POST was answered before every animal was fetched"
    assert (result.state, result.outcome) == (RunState.INTERRUPTED, RunOutcome.UPSTREAM_CHANGED), result.message
    assert "total_pages was 40, the API now says 10 (fewer pages" in result.message
    assert restarted[0].verify()["posts_rejected"] < 10, "the check stopped the run, not the last refused animal"


def test_a_total_that_changes_mid_listing_stops_the_run_and_journals_nothing_of_it(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=200, strict=True, faults={124: "total_pages_change"})
    journal = tmp_path / "j.db"

    result = start_run(settings(sim.url, journal, workers=2))

    assert (result.state, result.outcome) == (RunState.INTERRUPTED, RunOutcome.UPSTREAM_CHANGED)
    assert "total_pages was 20, the API now says 21 (more pages)" in result.message
    with Journal.open(journal, readonly=True) as opened:
        assert opened.run(1).total_pages == 20
        assert 13 not in opened.listed_pages(1)


# --- a listing that never starts, and listing items set aside ---------------------------------------------------


def test_a_run_whose_page_1_always_stalls_is_not_finished_and_counts_the_retries(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=50, chaos=100, stall_min=0.3, stall_max=0.3)
    journal = tmp_path / "j.db"

    result = start_run(settings(sim.url, journal, retries=2))

    assert (result.state, result.outcome) == (RunState.INTERRUPTED, RunOutcome.NEVER_LISTED)
    assert result.message.startswith("the listing never started: page 1 could not be listed (")
    assert "the listing never started: page 1 could not be listed" in result.message
    with Journal.open(journal, readonly=True) as opened:
        # the retries of the GETs that finally failed: each of the opening pages, listed at once, twice
        assert sum(status(opened).to_json()["retries"].values()) == 2 * OPENING_PAGES


def test_a_page_1_answering_404_is_named(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=50)
    result = start_run(settings(sim.url + "/wrong-prefix", tmp_path / "j.db", retries=1))
    assert (result.state, result.outcome) == (RunState.INTERRUPTED, RunOutcome.NEVER_LISTED)
    assert "page 1 could not be listed (page 1: HTTP 404" in result.message


class _OddListing(BaseHTTPRequestHandler):
    """One page whose items hold ids no journal can take, among good ones; details and POSTs answered plainly."""

    items = [{"id": 2}, {"id": 3.7}, {"id": 10**20}, {"id": -1}, {"id": "2"}, {"id": True}, {"id": 1}]
    posted: list[int] = []

    def do_GET(self) -> None:  # noqa: N802
        if "?page=" in self.path:
            page = int(self.path.rsplit("=", 1)[1])
            self._json({"page": page, "total_pages": 1, "items": self.items if page == 1 else []})
        else:
            animal_id = int(self.path.rsplit("/", 1)[1])
            self._json({"id": animal_id, "name": "Cobra", "born_at": None, "friends": ""})

    def do_POST(self) -> None:  # noqa: N802
        batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _OddListing.posted.extend(record["id"] for record in batch)
        self._json({"message": f"Helped {len(batch)} find home"})

    def _json(self, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_listing_items_with_ids_the_journal_cannot_hold_are_set_aside_and_audited(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OddListing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    journal = tmp_path / "j.db"
    try:
        result = start_run(settings(f"http://127.0.0.1:{server.server_port}", journal))
        again = resume_run(journal)  # the journal holds nothing a resume chokes on
    finally:
        server.shutdown()
        server.server_close()
    assert (result.state, result.outcome) == (RunState.FINISHED, RunOutcome.EXCEPTIONS)
    assert result.counts == {"posted": 2} and sorted(_OddListing.posted) == [1, 2]
    assert "5 listing items set aside" in result.message
    assert again.outcome is RunOutcome.EXCEPTIONS and sorted(_OddListing.posted) == [1, 2]
    report = audited(journal)
    assert report["exception_counts"] == {"bad_listing_item": 5}
    assert [item["reason"] for item in report["exceptions"]["bad_listing_item"]] == [
        "id 3.7 is float, not an integer",
        "id 100000000000000000000 is outside 0 .. 2**63-1",
        "id -1 is outside 0 .. 2**63-1",
        "id '2' is str, not an integer",
        "id True is bool, not an integer",
    ]


# --- stopping does not wait for GETs ----------------------------------------------------------------------------


def test_a_stop_during_a_trickling_get_returns_at_once_and_leaves_the_animal_discovered(trickler, tmp_path: Path) -> None:
    listing = {"page": 1, "total_pages": 1, "items": [{"id": 0, "name": "Cobra", "born_at": None}]}
    trickler.bodies = lambda path: json.dumps(listing).encode()
    # the first contact and the opening pages answer (those past the total are set aside); details trickle
    trickler.script.extend(["normal"] * (1 + OPENING_PAGES) + ["headers"] * 50)
    journal = tmp_path / "j.db"
    stop = threading.Event()
    stopped_at: list[float] = []

    def stop_during_the_trickle(progress: Progress) -> None:
        if len(trickler.seen) >= 2 + OPENING_PAGES and not stop.is_set():
            time.sleep(0.3)  # well inside the trickle
            stopped_at.append(time.monotonic())
            stop.set()

    result = start_run(
        settings(trickler.url, journal, get_deadline=60.0, get_timeout=5.0), stop=stop, on_progress=stop_during_the_trickle
    )

    # Left alone, the trickling GET would have fetched the animal: still `discovered`, it was dropped at the stop.
    assert stopped_at and (result.state, result.outcome) == (RunState.INTERRUPTED, RunOutcome.STOPPED)
    assert result.counts == {"discovered": 1}
    time.sleep(0.3)
    with Journal.open(journal, readonly=True) as opened:
        assert opened.count_animals(1) == {"discovered": 1}  # the dropped GET's late result touched nothing


# --- Expect: 100-continue against a server that behaves like uvicorn (tests/continue_server.py) -------


def counters(journal: Path) -> dict[str, int]:
    with Journal.open(journal, readonly=True) as opened:
        return opened.counters(1)


def test_a_stalled_post_is_hidden_resent_and_delivered_once(continuing, tmp_path: Path) -> None:
    server = continuing(ids=list(range(1, 301)))
    server.script(Fate(), Fate(stall=5.0))  # the second POST stalls for longer than the whole run should take
    journal = tmp_path / "j.db"

    result = start_run(settings(server.url, journal, post_workers=1, get_timeout=0.3, post_timeout=30.0))

    # The stall was not waited out: its try was closed with the body withheld (retry_body_withheld below) and re-sent.
    assert (result.outcome, result.in_doubt) == (RunOutcome.CLEAN, ())
    assert server.ledger.delivered == Counter(range(1, 301))
    figures = counters(journal)
    assert figures["retry_body_withheld"] == 1
    assert figures["post_delivered"] == 3 and figures["post_body_after_continue"] == 3
    assert audited(journal)["ok"]
    with Journal.open(journal, readonly=True) as opened:
        report = status(opened).to_json()
    assert report["posts"] == {"delivered": 3, "body_after_continue": 3}  # named as everywhere, not as errors
    assert report["retries"]["body_withheld"] == 1 and not any(name.startswith("post_") for name in report["errors"])


def test_a_first_send_refused_after_reading_is_in_doubt_and_its_refused_resend_a_repeat_at_once(
    continuing, tmp_path: Path
) -> None:
    server = continuing(ids=list(range(1, 51)))
    server.script(Fate(fail_after=True), Fate(fail_after=True))
    journal = tmp_path / "j.db"

    first = start_run(settings(server.url, journal, retries=10))

    assert first.in_doubt == (1,) and server.ledger.posts == 1  # not re-sent blindly, though 10 retries were allowed
    assert counters(journal)["post_refused_after_reading"] == 1
    [named] = audited(journal)["exceptions"]["in_doubt"]
    assert named["reason"].startswith("refused_after_reading: HTTP 500")

    again = resume_run(journal)  # at-least-once re-send: the handler reads it and refuses it

    assert again.in_doubt == (1,) and server.ledger.posts == 2  # one try, journaled at once
    [named] = audited(journal)["exceptions"]["in_doubt"]
    assert "on a re-send" in named["reason"] and "a repeat, the first send was delivered" in named["reason"]
    assert counters(journal)["resend_refused"] == 1


def test_a_proven_repeat_is_never_re_sent_by_a_later_resume(continuing, tmp_path: Path) -> None:
    """Every resume used to re-send a batch it had already proven a repeat: the refusals went 3 -> 6 -> 9."""
    server = continuing(ids=list(range(1, 51)))
    server.script(Fate(fail_after=True), Fate(fail_after=True), Fate(fail_after=True))
    journal = tmp_path / "j.db"
    start_run(settings(server.url, journal))
    resume_run(journal)  # the re-send is read and refused: a proven repeat
    assert server.ledger.posts == 2

    with capture_logs() as logs:
        later = [resume_run(journal) for _ in range(2)]

    assert server.ledger.posts == 2  # not one more refusal
    assert [run.in_doubt for run in later] == [(1,), (1,)]  # still named, never called delivered
    held = [entry for entry in logs if entry["event"] == "batch_held"]
    assert [entry["batch_id"] for entry in held] == [1, 1] and "proven repeat" in held[0]["reason"]
    [named] = audited(journal)["exceptions"]["in_doubt"]
    assert named["reason"].endswith("a repeat, the first send was delivered")


def the_assumed_batch(journal: Path) -> dict:
    """The one batch an audit that says OK counts apart as resting on an assumption: never proven."""
    report = audited(journal)
    assert report["ok"] and not report["proven"]
    [assumed] = report["assumed"]
    return assumed


@pytest.mark.parametrize("status", [429, 413])
def test_a_retry_after_answer_to_a_body_sent_without_100_continue_then_re_sent_is_never_proven(
    continuing, tmp_path: Path, status: int
) -> None:
    """urllib3 re-sends a 429 or 413 that carries Retry-After, like a 5xx: exactly once only if that answer came
    before the handler read the body. It used to be counted proven (only a 5xx was taken as an assumption)."""
    server = continuing(ids=list(range(1, 51)))
    server.script(Fate(stall=0.5, fail_before=status, retry_after="0"), Fate())  # the body follows the 0.2 s wait
    journal = tmp_path / "j.db"

    result = start_run(settings(server.url, journal, get_timeout=0.2, post_workers=1))

    assert result.outcome is RunOutcome.CLEAN and server.ledger.delivered == Counter(range(1, 51))
    assert server.ledger.posts == 2  # the answer was re-sent once, by urllib3's Retry-After rule
    assumed = the_assumed_batch(journal)
    assert assumed["assumption"].startswith(f"re-sent after HTTP {status} to a body sent without 100 Continue")


def test_a_5xx_to_a_body_sent_without_100_continue_evidence_then_re_sent_is_counted_apart_never_proven(
    continuing, tmp_path: Path
) -> None:
    server = continuing(ids=list(range(1, 51)))
    server.script(Fate(stall=0.5, fail_before=503), Fate())  # the body follows the 0.2 s wait; the 503 comes unread
    journal = tmp_path / "j.db"

    result = start_run(settings(server.url, journal, get_timeout=0.2, post_workers=1))

    assert result.outcome is RunOutcome.CLEAN and server.ledger.delivered == Counter(range(1, 51))
    assumed = the_assumed_batch(journal)
    assert (assumed["batch_id"], assumed["animals"]) == (1, 50)
    assert assumed["assumption"].startswith("re-sent after HTTP 503 to a body sent without 100 Continue")
    with Journal.open(journal, readonly=True) as opened:
        text = render_audit(audit(opened))
    assert "resting on an assumption, not proven: 1 batch" in text
    assert text.splitlines()[-1].startswith("OK, not proven for 1 batch (50 animals, listed above)")
    with Journal.open(journal, readonly=True) as opened:
        page = render_html(report_data(opened))
    assert "OK, not proven" in page and "resting on an assumption (not proven)" in page


def test_a_batch_failed_on_an_unproven_5xx_and_re_sent_by_a_resume_is_counted_apart_never_proven(
    continuing, tmp_path: Path
) -> None:
    server = continuing(ids=list(range(1, 51)))
    server.script(Fate(stall=0.5, fail_before=503))
    journal = tmp_path / "j.db"
    first = start_run(settings(server.url, journal, get_timeout=0.2, post_workers=1, retries=0))
    assert first.outcome is RunOutcome.EXCEPTIONS and not server.ledger.delivered

    again = resume_run(journal)

    assert again.outcome is RunOutcome.CLEAN and server.ledger.delivered == Counter(range(1, 51))
    assumed = the_assumed_batch(journal)
    assert assumed["batch_id"] != 1 and "taken to come before the handler read it" in assumed["assumption"]


def test_a_re_send_refused_for_its_content_is_no_proof_of_a_repeat_and_is_not_held(continuing, tmp_path: Path) -> None:
    """A batch in doubt (its answer lost) whose re-send the handler read and refused with 422 was journaled "a
    repeat, the first send was delivered" and held for ever. A 4xx judges the content, which the first send
    carried too: the server took nothing, and settling on that "proof" would lose the batch."""
    server = continuing(ids=list(range(1, 51)))
    server.script(Fate(lose_answer=True), Fate(refuse=422), Fate(refuse=422))
    journal = tmp_path / "j.db"
    first = start_run(settings(server.url, journal))
    assert first.in_doubt == (1,) and server.ledger.bodies_read == 1

    again = resume_run(journal)

    assert again.in_doubt == (1,) and server.ledger.bodies_read == 2 and not server.ledger.delivered
    [named] = audited(journal)["exceptions"]["in_doubt"]
    assert named["reason"].startswith("refused_after_reading on a re-send (HTTP 422")
    assert "a repeat, the first send was delivered" not in named["reason"]
    resume_run(journal)  # no proof either way: re-sent at least once more, not held
    assert server.ledger.bodies_read == 3 and not server.ledger.delivered


def test_an_unproven_5xx_then_failed_connections_until_the_run_halts_is_counted_apart_once_re_sent(
    continuing, tmp_path: Path
) -> None:
    """The 503's try sent its body without 100 Continue evidence; every later try met a closed connection before
    its body, so the POST ended `never_received` and the batch went back to pending. Its later delivery rests on
    that 503 having come before the handler, as much as a delivery re-sent within one POST does: never proven."""
    server = continuing(ids=list(range(1, 51)))
    server.script(Fate(stall=0.5, fail_before=503), *[Fate(hang_up=True)] * 3)  # retries=3: four tries in all
    journal = tmp_path / "j.db"
    first = start_run(settings(server.url, journal, get_timeout=0.2, post_workers=1, retries=3))
    assert first.outcome is RunOutcome.UNREACHABLE and not server.ledger.delivered

    again = resume_run(journal)

    assert again.outcome is RunOutcome.CLEAN and server.ledger.delivered == Counter(range(1, 51))
    assumed = the_assumed_batch(journal)
    assert (assumed["batch_id"], assumed["animals"]) == (1, 50)
    assert assumed["assumption"].startswith("re-sent after HTTP 503 to a body sent without 100 Continue")


def test_a_stop_while_a_post_waits_to_retry_a_failed_connection_stops_the_run_and_leaves_the_batch_unsent(
    continuing, tmp_path: Path
) -> None:
    """Ctrl-C while a POST backs off after a connection closed before its body: the run stops (exit 130 in the
    CLI), it does not die of an AttributeError with the batch left withheld."""
    server = continuing(ids=list(range(1, 51)))
    server.script(*[Fate(hang_up=True)] * 20)
    journal = tmp_path / "j.db"
    stop = threading.Event()
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(start_run(settings(server.url, journal, retries=10, backoff=1.0), stop=stop))
        except BaseException as exc:  # noqa: BLE001 - what escaped is the finding
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    wait_until(lambda: server.ledger.posts >= 2, what="the second try of the POST")  # then a ~2 s backoff
    time.sleep(0.2)
    stop.set()
    worker.join(timeout=10)
    assert not worker.is_alive()
    (result,) = outcome
    assert isinstance(result, RunResult), repr(result)
    assert result.outcome is RunOutcome.STOPPED and result.in_doubt == ()
    assert query(journal, "SELECT id, state FROM batches") == [(1, "pending")]
    assert server.ledger.bodies_read == 0


def test_a_run_whose_5xx_all_came_before_100_continue_is_proven(continuing, tmp_path: Path) -> None:
    server = continuing(ids=list(range(1, 51)))
    server.script(Fate(), Fate(fail_before=503), Fate())
    journal = tmp_path / "j.db"
    start_run(settings(server.url, journal, batch_size=25, post_workers=1))
    report = audited(journal)
    assert report["ok"] and report["proven"] and report["assumed"] == []


def test_a_server_without_100_continue_is_synced_exactly_once_and_the_run_says_so(continuing, tmp_path: Path) -> None:
    server = continuing(ids=list(range(1, 551)), speaks_continue=False)
    journal = tmp_path / "j.db"

    result = start_run(settings(server.url, journal, get_timeout=0.2, post_workers=1))

    assert result.outcome is RunOutcome.CLEAN
    assert server.ledger.delivered == Counter(range(1, 551)) and server.ledger.continues_sent == 0
    figures = counters(journal)  # the run's journal says which behaviour it met: three waits, then none
    assert figures["post_body_after_wait"] == 3 and figures["post_body_at_once"] == 3
    assert "post_body_after_continue" not in figures



def test_one_fsynced_commit_per_batch_taken_at_its_release(simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The release commit replaces the old before-the-POST commit: still one fsync a batch, not two."""
    sim = simulator(animals=1_000, strict=True)
    journal = tmp_path / "j.db"
    real_transaction = Journal.transaction
    fsynced: list[int] = []  # batches `sending` as each fsynced commit began

    def transaction(self: Journal, *, durable: bool = False):
        if durable and not self.db.conn.in_transaction:
            fsynced.append(self.db.execute("SELECT count(*) FROM batches WHERE state = 'sending'").fetchone()[0])
        return real_transaction(self, durable=durable)

    monkeypatch.setattr(Journal, "transaction", transaction)
    result = start_run(settings(sim.url, journal, post_workers=1))
    assert result.outcome is RunOutcome.CLEAN, result.message
    assert_exactly_once(sim)
    with Journal.open(journal, readonly=True) as opened:
        assert opened.count_batches(result.run_id) == {BatchState.POSTED: 10}
    # One release per batch (one POST out at a time, none sending yet as it begins), then the run's end.
    assert fsynced == [0] * 10 + [0]


@pytest.mark.parametrize("then", ["restarted with another data set", "gone"])
def test_resuming_a_finished_run_with_nothing_left_never_undoes_it(simulator, tmp_path: Path, then: str) -> None:
    """Cron and Indexed Jobs resume whatever the journal holds: a proven run must stay proven, whatever the API does."""
    sim = simulator(animals=200, seed=1, strict=True)
    journal = tmp_path / "j.db"
    assert start_run(settings(sim.url, journal)).outcome is RunOutcome.CLEAN
    port = _port(sim)
    sim.stop()
    if then == "restarted with another data set":
        after = simulator(animals=300, seed=2, strict=True, port=port)

    result = resume_run(journal)

    assert (result.state, result.outcome) == (RunState.FINISHED, RunOutcome.CLEAN), result.message
    assert result.message.startswith("already finished, nothing to resume: 200 animals posted")
    if then == "restarted with another data set":
        assert after.verify()["posts"] == 0  # nothing was sent, nothing re-checked into a change
    with Journal.open(journal, readonly=True) as opened:
        assert opened.run(1).state is RunState.FINISHED and opened.run(1).attempts == 1
    assert audited(journal)["ok"]


def test_resuming_a_finished_run_with_quarantined_animals_still_retries_them(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=100, strict=True, faults={7: "html"})
    journal = tmp_path / "j.db"
    assert start_run(settings(sim.url, journal)).outcome is RunOutcome.EXCEPTIONS
    again = resume_run(journal)
    assert not again.message.startswith("already finished")
    with Journal.open(journal, readonly=True) as opened:
        assert opened.run(1).attempts == 2  # it was resumed: the quarantined animal was fetched again


def test_a_stalled_first_listing_does_not_hold_the_run(simulator, tmp_path: Path) -> None:
    """Any listing tells the total: the first pages go out at once, so the one that stalls (here the first GET
    to arrive, held 3 s) is cut and re-sent while the others' ids are already being fetched (issue 19)."""
    sim = simulator(animals=300, stall_min=3, stall_max=3, strict=True)
    sim.queue_chaos(Chaos.STALL, method="GET")
    journal = tmp_path / "j.db"

    result = start_run(settings(sim.url, journal, get_timeout=1.0))

    assert result.outcome is RunOutcome.CLEAN
    assert_exactly_once(sim)
    (started,), listed = query(journal, "SELECT started_at FROM runs")[0], query(journal, "SELECT listed_at FROM pages")
    first = min(datetime.fromisoformat(at) for (at,) in listed) - datetime.fromisoformat(started)
    assert first.total_seconds() < 0.5  # not after the stalled page's cut (1 s: no answers seen yet, the ceiling)
    assert query(journal, "SELECT value FROM counters WHERE name = 'retry_read_timeout'") == [(1,)]
