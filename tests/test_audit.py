"""The audit's tamper detectors: a journal changed behind the pipeline's back is caught, kind by kind.

Each test builds a clean, finished run through the journal's own writes, proves the audit passes it, then
tampers with one row in plain SQL (as a bug or a person might) and sees the one detector meant for it fire.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from animal_sync.reports.audit import audit
from animal_sync.journal import Journal, RunState
from animal_sync.journal import duplicate_deliverable_ids, orphans
from animal_sync.cli.render import render_audit
from animal_sync.transform import canonical_json, transform
from conftest import tamper

IDS = list(range(6))


def detail(animal_id: int) -> str:
    return json.dumps({"id": animal_id, "name": f"Animal {animal_id}", "born_at": None, "friends": "Cat,Dog"})


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    """A finished run: six animals listed, fetched and posted in one batch answered 2xx."""
    with Journal.open(tmp_path / "j.db") as opened:
        run_id = opened.start_run({}, "http://127.0.0.1:9").id
        with opened.transaction():
            opened.record_page(run_id, 1, IDS, total_pages=1)
            for animal_id in IDS:
                raw = detail(animal_id)
                opened.record_fetched(run_id, animal_id, raw, canonical_json(transform(json.loads(raw))), attempts=1)
            batch_id = opened.create_batch(run_id, IDS)
            opened.mark_withheld(opened.batch(batch_id))
            opened.mark_sending(opened.batch(batch_id))
            opened.mark_posted(opened.batch(batch_id), 200, '{"message":"Helped 6 find home"}')
        opened.end_run(run_id, RunState.FINISHED, {"message": "done"})
        yield opened


def test_an_untouched_journal_passes(journal: Journal) -> None:
    report = audit(journal)
    assert report.ok and report.exception_counts == {} and report.records_rechecked == 6
    assert duplicate_deliverable_ids(journal, 1) == [] and orphans(journal, 1) == []


def test_an_id_in_two_deliverable_batches_is_a_duplicate(journal: Journal) -> None:
    tamper(journal, "INSERT INTO batches (run_id, state, ids, size, attempts, created_at) VALUES (1, 'in_doubt', '[4, 9]', 2, 1, 'x')")
    report = audit(journal)
    [duplicate] = report.exceptions["duplicate"]  # the in-doubt batch is named too, as in_doubt
    assert not report.ok and duplicate["id"] == 4 and sorted(duplicate["batches"]) == [1, 2]
    assert report.to_json()["exceptions"]["duplicate"] == [{"id": 4, "batches": list(duplicate["batches"])}]
    assert f"  id=4, batches={list(duplicate['batches'])}" in render_audit(report).splitlines()


def test_a_posted_animal_without_its_batch_is_an_orphan_from_both_sides(journal: Journal) -> None:
    tamper(journal, "UPDATE animals SET batch_id = NULL WHERE id = 2")
    report = audit(journal)
    assert report.exception_counts == {"orphan": 2}
    assert report.to_json()["exceptions"]["orphan"] == [
        {"id": 2, "batch_id": None, "batch_state": None},  # the animal says posted, by no batch
        {"id": 2, "batch_id": 1, "batch_state": "posted"},  # the batch says it carried an animal it does not hold
    ]


def test_a_posted_record_that_its_raw_payload_does_not_give_is_a_mismatch(journal: Journal) -> None:
    tamper(journal, """UPDATE animals SET transformed = '{"id":1}' WHERE id = 1""")
    tamper(journal, "UPDATE animals SET raw = 'not json' WHERE id = 3")
    report = audit(journal)
    assert report.exception_counts == {"mismatch": 2} and not report.ok
    posted, unreadable = report.exceptions["mismatch"]
    assert (posted["id"], posted["posted"]) == (1, '{"id":1}') and posted["expected"] == canonical_json(transform(json.loads(detail(1))))
    assert unreadable["id"] == 3 and unreadable["reason"].startswith("raw payload no longer transforms")
