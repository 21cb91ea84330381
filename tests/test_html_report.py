"""report --html: one self-contained page (nothing loaded from anywhere) holding the run's figures and exceptions."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from animal_sync.cli import main
from animal_sync.config import Settings
from animal_sync.reports.html_report import render_html, report_data, svg_columns, throughput
from animal_sync.journal import BatchState, Decision, Journal
from animal_sync.engine.pipeline import RunOutcome, start_run
from animal_sync.reports.settle import settle
from animal_sync.simulator import Chaos, Simulator, SimulatorConfig


class Page(HTMLParser):
    """Every tag with its attributes, and the visible text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())

    def count(self, tag: str) -> int:
        return sum(1 for name, _ in self.tags if name == tag)

    @property
    def words(self) -> str:
        return " ".join(self.text)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A finished run with exceptions: two quarantined animals and one batch left in doubt (held)."""
    sim = Simulator(SimulatorConfig(port=0, chaos=0.0, animals=300, strict=True, stall_min=1.0, stall_max=1.0,
                                    faults={7: "html", 8: "bad_born_at"})).start()
    sim.queue_chaos(Chaos.STALL, method="POST")
    path = tmp_path_factory.mktemp("html") / "j.db"
    try:
        settings = Settings(base_url=sim.url, journal=path, post_timeout=0.3, get_timeout=0.3, post_workers=1,
                            resend_in_doubt=False)
        assert start_run(settings).outcome is RunOutcome.EXCEPTIONS
    finally:
        sim.stop()
    yield path


def test_the_page_loads_nothing_from_anywhere(capsys, journal: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    code = main(["report", "--html", str(target), "--journal", str(journal)])
    out = capsys.readouterr().out
    assert code == 0 and "audit NOT OK (3 exceptions)" in out
    text = target.read_text(encoding="utf-8")
    page = Page(text)
    assert page.count("script") == 0 and page.count("link") == 0 and page.count("img") == 0 and page.count("iframe") == 0
    for tag, attrs in page.tags:
        for name in ("src", "href", "xlink:href", "action"):
            value = attrs.get(name) or ""
            assert not value.startswith(("http:", "https:", "//")), (tag, name, value)
    assert "http://" not in text.replace(journal_url(journal), "") and "https://" not in text
    assert "@import" not in text and "url(" not in text


def journal_url(journal: Path) -> str:
    """The one URL on the page is the API the run talked to, shown as text (never loaded)."""
    with Journal.open(journal, readonly=True) as opened:
        return opened.last_run().base_url


def test_the_page_holds_the_summary_charts_retries_and_exceptions(journal: Path) -> None:
    with Journal.open(journal, readonly=True) as opened:
        data = report_data(opened)
    page = Page(render_html(data))
    words = page.words
    assert page.count("svg") >= 3 and page.count("title") >= 3  # state chart, throughput chart, retry/error charts
    assert "animal-sync run 1: finished" in words and "NOT OK" in words
    assert f"{data.audit.posted:,} / 300" in words
    for heading in ("Summary", "Animals per state", "Throughput over time", "Retries and errors", "Exceptions from the audit"):
        assert heading in words
    for state in ("posted", "quarantined", "batched"):
        assert state in words
    assert "in_doubt (1)" in words and "quarantined (2)" in words
    assert "not JSON" in words and "born_at" in words  # the reasons, not just the counts
    assert "read_timeout" in words  # the POST that stalled is a retry-policy figure too
    ids = {attrs.get("id") for _, attrs in page.tags}
    assert {"summary", "states", "throughput", "retries", "exceptions", "exc-in_doubt", "exc-quarantined"} <= ids


def test_hostile_text_is_escaped(journal: Path) -> None:
    with Journal.open(journal, readonly=True) as opened:
        data = report_data(opened)
    hostile = {**data.audit.exceptions["quarantined"][0], "reason": '<script>alert("x")</script>'}
    audited = replace(data.audit, exceptions={**data.audit.exceptions, "quarantined": (hostile,)})
    data = replace(data, audit=audited, status=replace(data.status, base_url="http://x/<marquee>"))
    page = Page(render_html(data))
    assert page.count("script") == 0 and page.count("marquee") == 0
    assert '<script>alert("x")</script>' in page.words


def test_throughput_buckets_add_up_to_the_posted_animals(journal: Path) -> None:
    with Journal.open(journal, readonly=True) as opened:
        series = throughput(opened)
        posted = opened.count_animals(1)["posted"]
    assert sum(series.posted) == posted and series.bucket_seconds == 1
    assert len(series.posted) <= 61


def test_an_empty_series_draws_a_labelled_empty_chart() -> None:
    svg = svg_columns([], bucket_seconds=1, title="t", unit="animals/s")
    assert "nothing posted" in svg and Page(svg).count("svg") == 1


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (CI has none): the render check needs it")
def test_headless_chromium_renders_the_page(journal: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    assert main(["report", "--html", str(target), "--journal", str(journal)]) == 0
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}", "--window-size=1200,1600", target.resolve().as_uri(),
        ],
        capture_output=True, timeout=60, check=False,
    )
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_a_settled_batch_has_its_own_section_and_is_not_an_exception(journal: Path, tmp_path: Path) -> None:
    copy = tmp_path / "j.db"
    shutil.copy(journal, copy)
    with Journal.open(copy) as opened:
        [doubted] = opened.batches(1, BatchState.IN_DOUBT)
        settle(opened, Decision.DELIVERED, "seen in the <home> ledger", [doubted.id], user="alice")
        data = report_data(opened)
    page = Page(render_html(data))
    words = page.words
    assert "Settled by a person" in words and "alice" in words and "seen in the <home> ledger" in words
    assert "in_doubt (1)" not in words and "quarantined (2)" in words  # settled: no longer an exception
    assert f"settled by a person {doubted.id}" in words  # the summary names it too
    assert "settled" in {attrs.get("id") for _, attrs in page.tags}
