"""The journals as Prometheus metrics, read at scrape time: `/metrics`, a Pushgateway push, a textfile.

One `JournalCollector` serves all three, so a scrape, a push at a run's end and node_exporter's textfile show the
same series. Every figure comes from the journal (read-only, one short look per collection), never from a
process's memory: a scrape beside a run, after it, or of a journal restored from a backup says the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, push_to_gateway, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ..errors import JournalError
from ..journal import AnimalState, BatchState, Journal, RunRow, RunState, runs
from ..reports.status import status
from .overview import AUDITS

__all__ = ["JOB", "JournalCollector", "push", "registry_for", "write_textfile"]

JOB = "animal_sync"  # the Pushgateway job every push goes to; the journal is the grouping key
PUSH_TIMEOUT = 10.0  # seconds: a push must never hold a finished run's exit for long


def _epoch(stamp: str | None) -> float | None:
    return None if stamp is None else datetime.fromisoformat(stamp).timestamp()


def _last_clean_finish(journal: Journal, history: list[RunRow]) -> float | None:
    """When the newest run whose audit is clean finished: the time an alert on a stale nightly sync watches."""
    for run in history:  # newest first
        if run.state is RunState.FINISHED and not run.settings.get("dry_run") and AUDITS.of(journal, run).ok:
            return _epoch(run.finished_at)
    return None


class JournalCollector(Collector):
    """Collects the last run of each journal given, labelled by journal path; a journal that cannot be read
    (not there yet, damaged) reports `animal_sync_journal_readable 0` and nothing else."""

    def __init__(self, journals: Sequence[str | os.PathLike[str]]) -> None:
        self.journals = [str(path) for path in journals]

    def describe(self) -> list[object]:
        return []  # collected afresh at every scrape: nothing to check at registration

    def collect(self) -> Iterator[object]:
        label = ["journal"]
        readable = GaugeMetricFamily("animal_sync_journal_readable", "1 when the journal could be read.", labels=label)
        run_id = GaugeMetricFamily("animal_sync_run_id", "Id of the journal's last run.", labels=label)
        run_state = GaugeMetricFamily(
            "animal_sync_run_state", "The last run's state: 1 for the state it is in, 0 for the others.",
            labels=[*label, "state"],
        )
        animals = GaugeMetricFamily("animal_sync_animals", "Animals of the last run by state.", labels=[*label, "state"])
        batches = GaugeMetricFamily("animal_sync_batches", "Batches of the last run by state (outcome).", labels=[*label, "state"])
        posts = CounterMetricFamily("animal_sync_post_outcomes", "POST outcomes of the last run by kind.", labels=[*label, "outcome"])
        retries = CounterMetricFamily("animal_sync_retries", "Retries of the last run by kind.", labels=[*label, "kind"])
        pages = GaugeMetricFamily("animal_sync_pages_listed", "Pages the last run has listed.", labels=label)
        pages_total = GaugeMetricFamily("animal_sync_pages_planned", "Pages the last run lists (its shard's).", labels=label)
        started = GaugeMetricFamily("animal_sync_run_started_timestamp_seconds", "When the last run started.", labels=label)
        duration = GaugeMetricFamily(
            "animal_sync_run_duration_seconds", "The last run's duration: until it ended, or until now while it runs.",
            labels=label,
        )
        clean = GaugeMetricFamily(
            "animal_sync_last_clean_finish_timestamp_seconds",
            "When the newest run whose audit is clean finished (absent before the first).", labels=label,
        )
        for name in self.journals:
            try:
                with Journal.open(name, readonly=True) as journal:
                    history = runs(journal)
                    if not history:
                        raise JournalError(f"journal {name} holds no run yet")
                    report = status(journal, history[0].id)
                    finished = _last_clean_finish(journal, history)
            except JournalError:
                readable.add_metric([name], 0)
                continue
            readable.add_metric([name], 1)
            run_id.add_metric([name], report.run_id)
            for state in RunState:
                run_state.add_metric([name, state.value], 1 if report.state is state else 0)
            for state in AnimalState:
                animals.add_metric([name, state.value], report.animals.get(state.value, 0))
            for state in BatchState:
                batches.add_metric([name, state.value], report.batches.get(state.value, 0))
            for outcome, n in report.posts.items():
                posts.add_metric([name, outcome], n)
            for kind, n in report.retries.items():
                retries.add_metric([name, kind], n)
            pages.add_metric([name], report.pages.listed)
            if report.pages.owned is not None:
                pages_total.add_metric([name], report.pages.owned)
            started.add_metric([name], _epoch(report.started_at) or 0)
            duration.add_metric([name], report.elapsed_seconds)
            if finished is not None:
                clean.add_metric([name], finished)
        yield from (readable, run_id, run_state, animals, batches, posts, retries, pages, pages_total, started, duration, clean)


def registry_for(journals: Sequence[str | os.PathLike[str]]) -> CollectorRegistry:
    """A registry holding only the journals' collector (no process metrics: a push must describe the run, not us)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JournalCollector(journals))
    return registry


def push(journal: str | os.PathLike[str], gateway: str) -> None:
    """Push the journal's metrics to a Pushgateway, grouped by job and journal, replacing that group's last push.

    Raises OSError (or a urllib error, one of its kind) when the gateway cannot be reached or refuses.
    """
    push_to_gateway(
        gateway, job=JOB, registry=registry_for([journal]), grouping_key={"journal": str(journal)},
        timeout=PUSH_TIMEOUT,
    )


def write_textfile(journal: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Write the journal's metrics for node_exporter's textfile collector, atomically (a temporary file renamed)."""
    write_to_textfile(str(Path(path)), registry_for([journal]))
