"""The audit's tamper detectors fire on a real journal changed behind the job's back with plain sqlite3.

A clean run is synced once into a journal; each test tampers with its own copy, as a person with `sqlite3`
or a faulty disk would, and reads the audit: the untouched copy audits clean, so each exception is the tamper's.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from animal_sync.config import Settings
from animal_sync.engine.pipeline import RunOutcome, start_run
from animal_sync.simulator import Simulator, SimulatorConfig
from conftest import audited, copy_of, query, tamper


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A journal of one clean run: 30 animals in three posted batches of 10."""
    journal = tmp_path_factory.mktemp("synced") / "j.db"
    with Simulator(SimulatorConfig(port=0, animals=30, chaos=0.0, strict=True)) as sim:
        result = start_run(Settings(base_url=sim.url, journal=journal, batch_size=10))
    assert result.outcome is RunOutcome.CLEAN, result.message
    return journal


@pytest.fixture
def journal(synced: Path, tmp_path: Path) -> Path:
    return copy_of(synced, tmp_path)


def batch_ids(journal: Path, batch_id: int) -> list[int]:
    [(ids,)] = query(journal, "SELECT ids FROM batches WHERE id = ?", (batch_id,))
    return json.loads(ids)


def test_the_untouched_journal_audits_clean(journal: Path) -> None:
    report = audited(journal)
    assert report["ok"] and report["exception_counts"] == {}


def test_an_id_carried_by_two_posted_batches_is_a_duplicate(journal: Path) -> None:
    stolen = batch_ids(journal, 1)[0]
    tamper(journal, "UPDATE batches SET ids = ? WHERE id = 2", (json.dumps([*batch_ids(journal, 2), stolen]),))
    report = audited(journal)
    assert not report["ok"] and report["exception_counts"]["duplicate"] == 1
    assert report["exceptions"]["duplicate"] == [{"id": stolen, "batches": [1, 2]}]


def test_a_posted_animal_without_its_batch_is_an_orphan(journal: Path) -> None:
    lost = batch_ids(journal, 3)[0]
    tamper(journal, "UPDATE animals SET batch_id = NULL WHERE id = ?", (lost,))
    report = audited(journal)
    assert not report["ok"]
    assert {"id": lost, "batch_id": None, "batch_state": None} in report["exceptions"]["orphan"]


def test_a_posted_batch_whose_animals_are_not_posted_by_it_names_them_orphans(journal: Path) -> None:
    tamper(journal, "UPDATE batches SET state = 'failed' WHERE id = 2")
    report = audited(journal)
    assert not report["ok"] and report["exception_counts"]["orphan"] == 10
    assert {row["id"] for row in report["exceptions"]["orphan"]} <= set(batch_ids(journal, 2))


def test_a_posted_record_that_is_not_its_raw_body_transformed_is_a_mismatch(journal: Path) -> None:
    [(animal_id, transformed)] = query(journal, "SELECT id, transformed FROM animals WHERE state = 'posted' LIMIT 1")
    forged = json.dumps({**json.loads(transformed), "name": "Forged"}, separators=(",", ":"))
    tamper(journal, "UPDATE animals SET transformed = ? WHERE id = ?", (forged, animal_id))
    report = audited(journal)
    assert not report["ok"] and report["exception_counts"] == {"mismatch": 1}
    [found] = report["exceptions"]["mismatch"]
    assert found["id"] == animal_id and found["posted"] == forged and found["expected"] == transformed


def test_a_raw_body_that_no_longer_transforms_is_a_mismatch(journal: Path) -> None:
    [(animal_id,)] = query(journal, "SELECT id FROM animals WHERE state = 'posted' LIMIT 1")
    tamper(journal, "UPDATE animals SET raw = '{not json' WHERE id = ?", (animal_id,))
    report = audited(journal)
    assert report["exception_counts"] == {"mismatch": 1}
    assert report["exceptions"]["mismatch"][0]["reason"].startswith("raw payload no longer transforms")
