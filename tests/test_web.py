"""`serve`: the overview's data, the animals search, escaping, the trigger's rules, and reading beside a writer.

Journals come from real runs against the simulator (or the journal's own writes, for an in-doubt batch and a
hostile name); the app is driven in-process through Starlette's TestClient, and on a real socket where it matters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from animal_sync.cli import main
from animal_sync.journal import Journal
from animal_sync.web import ServeConfig, create_app
from animal_sync.web.animals import search
from animal_sync.web.overview import Sampler, look
from conftest import assert_one_line, audited, cli, query, run_cli, unplugged_mid_run
from web_fixtures import XSS_NAME, LiveServer, crafted_journal

TOKEN = "s3cret-token"


def client(*journals: Path, token: str | None = None) -> TestClient:
    return TestClient(create_app(ServeConfig(tuple(map(str, journals)), token=token)), base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clean run of 120 animals into a journal whose path has a space in it."""
    from animal_sync.simulator import Simulator, SimulatorConfig

    journal = tmp_path_factory.mktemp("web") / "my journal.db"
    with Simulator(SimulatorConfig(port=0, chaos=0.0, animals=120)) as sim:
        assert main(["run", "--journal", str(journal), "--base-url", sim.url, "--quiet"]) == 0
    return journal


def test_the_overview_is_a_frame_with_a_strict_content_policy_and_no_trigger_unless_enabled(synced: Path) -> None:
    with client(synced) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert 'id="trigger-form"' not in page.text
        assert http.get("/static/app.js").status_code == 200
        # Off by default: POST /runs is a path this server does not have.
        assert http.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_overview_reports_the_run_from_the_journal_alone(synced: Path) -> None:
    with client(synced) as http:
        data = http.get("/api/overview").json()
    assert data["state"] == "finished"
    assert (data["posted"], data["expected"], data["fetched"], data["done"]) == (120, 120, 120, 120)
    assert (data["pages_listed"], data["pages_total"]) == (12, 12)
    assert data["animals"]["posted"] == 120 and data["exceptions"] == []
    assert data["posts"]["delivered"] == 2  # two batches of 100 and 20
    kinds = {(event["kind"], event["state"]) for event in data["events"]}
    assert {("run", "started"), ("run", "finished"), ("batch", "posted"), ("page", "listed")} <= kinds
    assert data["events"] == sorted(data["events"], key=lambda event: event["at"], reverse=True)


def test_the_event_stream_sends_the_overview_and_nothing_faster_than_once_a_second(synced: Path) -> None:
    sampler = Sampler([str(synced)], every=0.1)  # asked for faster: held to once a second
    first = sampler.overview()
    assert sampler.overview() is first
    with LiveServer(ServeConfig((str(synced),))) as server:
        with urllib.request.urlopen(server.url + "events", timeout=10) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = []
            while len([line for line in lines if line.startswith(b"data:")]) < 2:
                lines.append(stream.readline())
    payloads = [json.loads(line[5:]) for line in lines if line.startswith(b"data:")]
    assert payloads[0]["posted"] == 120
    assert b"event: overview\n" in lines


def test_several_journals_are_shown_as_one_like_status_does(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=200)
    shards = [tmp_path / f"shard-{index}.db" for index in range(2)]
    for index, journal in enumerate(shards):
        assert main(["run", "--journal", str(journal), "--base-url", sim.url, "--shard", f"{index}/2", "--quiet"]) == 0
    found = look([str(path) for path in shards])
    assert (found.posted, found.expected, found.pages_listed, found.pages_total) == (200, 200, 20, 20)
    assert [view.status.shard for view in found.journals] == ["0/2", "1/2"]
    assert {line.journal for line in found.events} == {str(path) for path in shards}
    # Paging runs across the journals: 200 animals, 20 a page, shard 0's first.
    last = search([str(path) for path in shards], "", page=10)
    assert (last.total, last.pages, len(last.animals)) == (200, 10, 20)
    assert {item.journal for item in last.animals} == {str(shards[1])}


def test_a_journal_that_does_not_exist_yet_is_said_so_then_shown_once_it_does(simulator, tmp_path: Path) -> None:
    journal = tmp_path / "later.db"
    before = look([str(journal)])
    assert before.state == "no run yet" and before.journals[0].problem.startswith(f"no journal at {journal} yet")
    assert main(["run", "--journal", str(journal), "--base-url", simulator(animals=30).url, "--quiet"]) == 0
    assert look([str(journal)]).posted == 30


def test_animals_search_by_id_or_name_paged_with_raw_and_posted_record_and_batch(synced: Path) -> None:
    with Journal.open(synced, readonly=True) as journal:
        name = next(record["name"] for record in journal.batch_records(journal.batch(1)) if record["id"] == 7)
    by_id = search([str(synced)], "7")
    assert [item.record.id for item in by_id.animals] == [7]
    assert by_id.animals[0].batch.id == 1 and by_id.animals[0].batch.state == "posted"
    by_name = search([str(synced)], name.upper())  # any case
    assert 7 in [item.record.id for item in by_name.animals]
    assert all(name.lower() in (item.name or "").lower() for item in by_name.animals)
    with client(synced) as http:
        page = http.get("/animals", params={"q": "7"}).text
        assert 'data-id="7"' in page and "as received" in page and "as posted" in page
        assert "batch 1 (posted, 100 animals" in page
        second = http.get("/animals", params={"page": "2"}).text
        assert 'data-id="20"' in second and 'data-id="19"' not in second and "page 2 of 6" in second
        assert http.get("/animals", params={"q": "%"}).status_code == 200  # a LIKE wildcard is text, not a pattern
    assert search([str(synced)], "%").total == 0


def test_an_animal_named_markup_shows_as_text(tmp_path: Path) -> None:
    journal = crafted_journal(tmp_path / "j.db", {0: XSS_NAME, 1: 'Cat" onmouseover="alert(2)'})
    with client(journal) as http:
        page = http.get("/animals", params={"q": "<script>"}).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert XSS_NAME not in page
        other = http.get("/animals").text
        assert 'onmouseover="alert(2)' not in other and "Cat&quot; onmouseover=&quot;alert(2)" in other
        # The query itself is echoed into the search box: escaped too.
        echoed = http.get("/animals", params={"q": '"><script>alert(3)</script>'}).text
        assert "<script>alert(3)" not in echoed


def test_exceptions_name_the_command_that_settles_each_with_the_journal(tmp_path: Path) -> None:
    journal = crafted_journal(tmp_path / "a b.db", {0: "Cat", 1: "Dog"}, in_doubt=True)
    found = look([str(journal)])
    fixes = {fix.kind: fix for fix in found.exceptions}
    assert fixes["in_doubt"].command == f"animal-sync settle 1 --delivered --reason \"<why you know>\" --journal '{journal}'"
    assert "animal-sync resume" in fixes["in_doubt"].what and fixes["in_doubt"].count == 2


def test_exceptions_of_a_run_with_quarantined_animals_and_an_interrupted_one(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=40, faults={3: "bad_born_at"})
    journal = tmp_path / "q.db"
    assert main(["run", "--journal", str(journal), "--base-url", sim.url, "--quiet"]) == 1
    fixes = {fix.kind: fix for fix in look([str(journal)]).exceptions}
    assert fixes["quarantined"].count == 1 and fixes["quarantined"].command == f"animal-sync resume --journal {journal}"
    dead = tmp_path / "dead.db"
    gone = simulator(animals=5000, seed=5, strict=True)
    with unplugged_mid_run(gone, dead):  # it answered, then went away
        assert main(["run", "--journal", str(dead), "--base-url", gone.url, "--retries", "0", "--quiet"]) == 1
    fixes = {fix.kind: fix for fix in look([str(dead)]).exceptions}
    assert fixes["interrupted"].command == f"animal-sync resume --journal {dead}"
    assert "stopped answering" in fixes["interrupted"].what


def test_the_trigger_refuses_a_request_without_the_token(synced: Path) -> None:
    with client(synced, token=TOKEN) as http:
        assert 'id="trigger-form"' in http.get("/").text
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Cookie": f"token={TOKEN}"}):
            answer = http.post("/runs", headers=headers)
            assert answer.status_code == 401, headers
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert http.get("/runs").json() == {"children": []}  # nothing was started


def test_the_trigger_resumes_a_finished_journal_and_syncs_nothing_again(synced: Path) -> None:
    with client(synced, token=TOKEN) as http:
        answer = http.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        launch = answer.json()["launches"][0]
        assert launch["child"]["command"][3:] == ["resume", "--journal", str(synced)]
        child = wait_for_child(http)
    assert child["exit_code"] == 0 and "already finished, nothing to resume" in child["last_lines"][-1]
    with Journal.open(synced, readonly=True) as journal:
        assert journal.last_run().id == 1 and journal.last_run().attempts == 1  # nothing written


def test_the_trigger_starts_nothing_while_the_journal_s_run_is_running(tmp_path: Path) -> None:
    journal = crafted_journal(tmp_path / "busy.db", {0: "Cat"}, finished=False)
    with Journal.open(journal, exclusive=True), client(journal, token=TOKEN) as http:  # the writer: this process
        answer = http.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 409
        assert answer.json()["launches"][0]["refused"] == f"run 1 of {journal} is running (pid {os.getpid()}): one writer at a time"
        assert http.get("/runs").json() == {"children": []}


def test_the_trigger_s_child_is_refused_by_the_journal_lock_and_says_so(synced: Path) -> None:
    """A writer the pre-check cannot see (its run is not `running` yet): the lock refuses the child, in its words."""
    with Journal.open(synced, exclusive=True), client(synced, token=TOKEN) as http:  # the writer's lock, held here
        answer = http.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        child = answer.json()["launches"][0]["child"] if answer.status_code == 202 else None
        if child is not None:  # the child took longer than the trigger waits to start Python and meet the lock
            child = wait_for_child(http)
        else:
            assert answer.status_code == 409
            child = answer.json()["launches"][0]["child"]
    assert child["exit_code"] == 2
    assert "is in use by another animal-sync process" in child["last_lines"][-1]


def test_the_trigger_starts_a_run_in_a_new_journal_as_a_child_and_the_page_shows_it(simulator, tmp_path: Path) -> None:
    sim = simulator(animals=300)
    journal = tmp_path / "new.db"
    app = create_app(ServeConfig((str(journal),), token=TOKEN, base_url=sim.url))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        answer = http.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 202
        assert answer.json()["launches"][0]["child"]["command"][3:] == ["run", "--journal", str(journal), "--base-url", sim.url]
        child = wait_for_child(http)
        assert child["exit_code"] == 0, child
        time.sleep(1.0)  # the page looks once a second
        assert http.get("/api/overview").json()["posted"] == 300
    assert audited(journal)["ok"]


def wait_for_child(http: TestClient, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        children = http.get("/runs").json()["children"]
        if children and children[0]["exit_code"] is not None:
            return children[0]
        time.sleep(0.1)
    raise AssertionError("the child run did not end")


def test_serve_refuses_the_trigger_without_a_token(capsys, monkeypatch) -> None:
    monkeypatch.delenv("ANIMAL_SYNC_SERVE_TOKEN", raising=False)
    code, _, err = run_cli(capsys, "serve", "--allow-trigger", "--port", "0")
    assert code == 2
    assert_one_line(err, "--allow-trigger needs a token: set ANIMAL_SYNC_SERVE_TOKEN")


def test_serve_answers_only_loopback_host_names_when_bound_to_loopback(synced: Path) -> None:
    config = ServeConfig((str(synced),), allowed_hosts=("127.0.0.1", "localhost"))
    with LiveServer(config) as server:
        request = urllib.request.Request(server.url, headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400
        with urllib.request.urlopen(server.url, timeout=10) as page:
            assert page.status == 200


def test_looking_every_moment_never_blocks_the_writer_and_survives_its_restart(simulator, tmp_path: Path) -> None:
    """A reader polling without pause beside a run that is SIGKILLed mid-way and resumed by a new process: the
    run ends clean, the reader saw it running and finished, and never failed."""
    sim = simulator(animals=300)
    journal = tmp_path / "busy.db"
    seen: list[str] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(look([str(journal)]).state)
                time.sleep(0.02)  # fifty looks a second: fifty times the page's pace, and a core left for the run
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                failures.append(exc)
                return

    thread = threading.Thread(target=reader)
    thread.start()
    common = ["--journal", str(journal), "--quiet"]
    try:
        first = subprocess.Popen(cli("run", "--base-url", sim.url, "--post-workers", "1", "--batch-size", "50", *common))
        deadline = time.monotonic() + 60
        while not query(journal, "SELECT 1 FROM animals WHERE state = 'posted' LIMIT 1") and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait()
        resumed = subprocess.run(cli("resume", *common), timeout=120).returncode
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures
    assert "running" in seen and seen[-1] == "finished"
    report = audited(journal)  # a kill with a body out leaves that batch in doubt (exit 1), and only that
    assert (resumed, report["ok"]) == (0, True) or (resumed == 1 and report["exception_counts"].keys() <= {"in_doubt", "at_least_once"})


def test_serve_from_the_cli_on_a_free_port_then_stopped_by_sigterm_with_a_browser_still_listening(synced: Path, tmp_path: Path) -> None:
    """The real command: it says where it listens, serves the page and the stream, and a stop with an event
    stream still open ends at once, cleanly (exit 0, no traceback)."""
    errors = tmp_path / "serve.err"
    with errors.open("wb") as err:
        process = subprocess.Popen(cli("serve", "--journal", str(synced), "--port", "0"), stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 20
        while "http://" not in errors.read_text():
            assert process.poll() is None and time.monotonic() < deadline, errors.read_text()
            time.sleep(0.05)
        url = errors.read_text().split("serve on ", 1)[1].split(" ", 1)[0]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=10) as page:
            assert b'id="overview"' in page.read()
        stream = urllib.request.urlopen(url + "events", timeout=10)
        assert stream.readline().startswith(b"retry:")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        assert time.monotonic() - started < 5
        stream.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in errors.read_text(), errors.read_text()
