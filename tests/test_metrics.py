"""Metrics: `/metrics` read from the journal at scrape time, `run/resume --metrics-textfile`, and
`--pushgateway` against a real Pushgateway (Debian's prometheus-pushgateway, installed here where missing)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from animal_sync.journal import Journal
from animal_sync.simulator import Chaos
from animal_sync.web import ServeConfig, create_app
from conftest import run_cli, unplugged_mid_run
from web_fixtures import crafted_journal, debian_package

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from animal_sync.cli import main
    from animal_sync.simulator import Simulator, SimulatorConfig

    journal = tmp_path_factory.mktemp("metrics") / "clean.db"
    with Simulator(SimulatorConfig(port=0, chaos=0.0, animals=150)) as sim:
        assert main(["run", "--journal", str(journal), "--base-url", sim.url, "--quiet"]) == 0
    return journal


def test_metrics_endpoint_reads_the_journal_at_scrape_time(clean_run: Path, tmp_path: Path) -> None:
    missing = tmp_path / "not-yet.db"
    app = create_app(ServeConfig((str(clean_run), str(missing))))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        answer = http.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=")
    found = samples(answer.text)
    j = str(clean_run)
    assert value(found, "animal_sync_journal_readable", journal=j) == 1
    assert value(found, "animal_sync_journal_readable", journal=str(missing)) == 0
    assert value(found, "animal_sync_animals", journal=j, state="posted") == 150
    assert value(found, "animal_sync_animals", journal=j, state="failed") == 0
    assert value(found, "animal_sync_batches", journal=j, state="posted") == 2
    assert value(found, "animal_sync_post_outcomes_total", journal=j, outcome="delivered") == 2
    assert value(found, "animal_sync_run_state", journal=j, state="finished") == 1
    assert value(found, "animal_sync_run_state", journal=j, state="running") == 0
    with Journal.open(clean_run, readonly=True) as journal:
        run = journal.last_run()
    finished = datetime.fromisoformat(run.finished_at).timestamp()
    assert value(found, "animal_sync_last_clean_finish_timestamp_seconds", journal=j) == pytest.approx(finished)
    assert value(found, "animal_sync_run_duration_seconds", journal=j) == pytest.approx(
        finished - datetime.fromisoformat(run.started_at).timestamp(), abs=0.01
    )
    assert value(found, "animal_sync_pages_listed", journal=j) == 15
    assert not [key for key in found if key[1] and dict(key[1]).get("journal") == str(missing) and key[0] != "animal_sync_journal_readable"]


def test_a_run_with_a_batch_in_doubt_has_no_clean_finish(tmp_path: Path) -> None:
    journal = crafted_journal(tmp_path / "doubt.db", {0: "Cat", 1: "Dog"}, in_doubt=True)
    with TestClient(create_app(ServeConfig((str(journal),))), base_url="http://127.0.0.1") as http:
        found = samples(http.get("/metrics").text)
    assert value(found, "animal_sync_batches", journal=str(journal), state="in_doubt") == 1
    assert value(found, "animal_sync_last_clean_finish_timestamp_seconds", journal=str(journal)) is None


def test_run_writes_the_metrics_textfile_atomically_when_it_ends(simulator, tmp_path: Path, capsys, restore_signals) -> None:
    sim = simulator(animals=40)
    sim.queue_chaos(Chaos.FAIL, Chaos.FAIL)  # two 5xx answers at once: two retries to count
    journal, textfile = tmp_path / "j.db", tmp_path / "collector" / "animal_sync.prom"
    textfile.parent.mkdir()
    code, _, err = run_cli(capsys, "run", "--journal", str(journal), "--base-url", sim.url, "--quiet", "--metrics-textfile", str(textfile))
    assert code == 0, err
    found = samples(textfile.read_text())
    assert value(found, "animal_sync_animals", journal=str(journal), state="posted") == 40
    assert sum(v for (name, labels), v in found.items() if name == "animal_sync_retries_total") == 2
    assert sorted(path.name for path in textfile.parent.iterdir()) == ["animal_sync.prom"]  # no temporary left


def test_a_failed_push_is_one_warning_line_and_never_fails_the_run(simulator, tmp_path: Path, capsys, restore_signals) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    sim = simulator(animals=20)
    code, _, err = run_cli(
        capsys, "run", "--journal", str(tmp_path / "j.db"), "--base-url", sim.url, "--quiet",
        "--pushgateway", f"http://127.0.0.1:{port}", "--metrics-textfile", str(tmp_path / "no-such-dir" / "m.prom"),
    )
    assert code == 0
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 2, err
    assert warnings[0].startswith(f"animal-sync: warning: could not push metrics to http://127.0.0.1:{port}: ")
    assert warnings[1].startswith("animal-sync: warning: could not write metrics to ")


# -- a real Pushgateway ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's prometheus-pushgateway on 127.0.0.1 and a free port (installed first where it is missing)."""
    reason = debian_package(PUSHGATEWAY, "prometheus-pushgateway")
    if reason:
        pytest.skip(reason)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path_factory.mktemp("pushgateway") / "log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=2) as ready:
                    if ready.status == 200:
                        break
            except OSError:
                assert process.poll() is None, "the Pushgateway exited at start"
                assert time.monotonic() < deadline, "the Pushgateway did not get ready"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def pushed(gateway: str, journal: Path) -> dict[str, list[dict]]:
    """The series the Pushgateway holds for the journal's group, by metric name, through its HTTP API."""
    with urllib.request.urlopen(gateway + "/api/v1/metrics", timeout=10) as answer:
        groups = json.load(answer)["data"]
    for group in groups:
        if group["labels"] == {"job": "animal_sync", "journal": str(journal)}:
            return {name: family["metrics"] for name, family in group.items() if isinstance(family, dict) and "metrics" in family}
    return {}


def series(found: dict[str, list[dict]], name: str, **labels: str) -> float | None:
    for metric in found.get(name, []):
        if all(metric["labels"].get(key) == want for key, want in labels.items()):
            return float(metric["value"])
    return None


def test_run_pushes_its_metrics_to_a_real_pushgateway_when_it_ends(pushgateway: str, simulator, tmp_path: Path, capsys, restore_signals) -> None:
    sim = simulator(animals=70)
    journal = tmp_path / "pushed.db"
    code, _, err = run_cli(capsys, "run", "--journal", str(journal), "--base-url", sim.url, "--quiet", "--pushgateway", pushgateway)
    assert code == 0 and "warning" not in err, err
    found = pushed(pushgateway, journal)
    assert series(found, "animal_sync_animals", state="posted") == 70
    assert series(found, "animal_sync_run_state", state="finished") == 1
    assert series(found, "animal_sync_batches", state="posted") == 1
    assert series(found, "animal_sync_last_clean_finish_timestamp_seconds") is not None
    assert series(found, "animal_sync_run_duration_seconds") is not None


def test_an_interrupted_run_and_its_resume_push_too(pushgateway: str, simulator, tmp_path: Path, capsys, restore_signals) -> None:
    journal = tmp_path / "stopped.db"
    gone = simulator(animals=5000, seed=5, strict=True)
    with unplugged_mid_run(gone, journal):  # it answered, then went away: the run is interrupted, not refused
        code, _, err = run_cli(
            capsys, "run", "--journal", str(journal), "--base-url", gone.url, "--retries", "2", "--quiet",
            "--pushgateway", pushgateway,
        )
    assert code == 1 and "interrupted" in err, err
    found = pushed(pushgateway, journal)
    assert series(found, "animal_sync_run_state", state="interrupted") == 1
    assert series(found, "animal_sync_last_clean_finish_timestamp_seconds") is None
    back = simulator(animals=5000, seed=5, strict=True)  # the same data set, served again
    code, _, err = run_cli(capsys, "resume", "--journal", str(journal), "--base-url", back.url, "--quiet", "--pushgateway", pushgateway)
    assert code == 0, err
    found = pushed(pushgateway, journal)  # the same group, replaced by the resume's push
    assert series(found, "animal_sync_run_state", state="finished") == 1


def test_a_run_stopped_by_sigterm_pushes_as_it_stops(pushgateway: str, simulator, tmp_path: Path) -> None:
    """Kubernetes stops a Job with SIGTERM: the run finishes its POSTs in flight, stops, and pushes on its way out."""
    import signal

    from conftest import cli, query

    sim = simulator(animals=2000)
    journal = tmp_path / "sigterm.db"
    run = subprocess.Popen(
        cli("run", "--journal", str(journal), "--base-url", sim.url, "--quiet", "--workers", "1", "--batch-size", "20", "--pushgateway", pushgateway),
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not query(journal, "SELECT 1 FROM animals WHERE state = 'posted' LIMIT 1"):
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert b"warning" not in err, err
    found = pushed(pushgateway, journal)
    assert series(found, "animal_sync_run_state", state="interrupted") == 1
    posted = query(journal, "SELECT count(*) FROM animals WHERE state = 'posted'")[0][0]
    assert 0 < posted < 2000 and series(found, "animal_sync_animals", state="posted") == posted
