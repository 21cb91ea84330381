"""export: a run's animals streamed out of a real journal as JSON lines or CSV, nothing lost, memory flat."""

from __future__ import annotations

import base64
import csv
import io
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from animal_sync.cli import main
from animal_sync.config import Settings
from animal_sync.reports.export import CSV_FIELDS, ExportFormat, Payload, export, export_to_path
from animal_sync.journal import AnimalState, Journal
from animal_sync.engine.pipeline import RunOutcome, start_run
from animal_sync.journal import iter_animals
from animal_sync.simulator import Simulator, SimulatorConfig


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A finished run of 60 animals: 57 posted, 3 quarantined (a non-JSON body, a bad date, no name)."""
    sim = Simulator(SimulatorConfig(port=0, chaos=0.0, animals=60, strict=True,
                                    faults={5: "html", 6: "bad_born_at", 7: "missing_name", 9: "unicode_name"})).start()
    path = tmp_path_factory.mktemp("export") / "j.db"
    try:
        assert start_run(Settings(base_url=sim.url, journal=path, batch_size=20)).outcome is RunOutcome.EXCEPTIONS
    finally:
        sim.stop()
    yield path


def read(path: Path, **options) -> str:
    out = io.StringIO()
    with Journal.open(path, readonly=True) as journal:
        export(journal, out, **options)
    return out.getvalue()


def test_jsonl_holds_every_animal_with_state_batch_error_and_record(synced: Path) -> None:
    rows = [json.loads(line) for line in read(synced).splitlines()]
    assert [row["id"] for row in rows] == list(range(60))
    by_id = {row["id"]: row for row in rows}
    assert set(by_id[1]) == {"id", "state", "batch_id", "last_error", "record"}
    assert by_id[1]["state"] == "posted" and isinstance(by_id[1]["batch_id"], int)
    assert set(by_id[1]["record"]) == {"id", "name", "born_at", "friends"} and isinstance(by_id[1]["record"]["friends"], list)
    assert by_id[9]["record"]["name"] == "Ñandú 🐦 Straße"  # unicode kept as text, not escaped away
    assert "Ñandú" in read(synced)
    assert by_id[5]["state"] == "quarantined" and "not JSON" in by_id[5]["last_error"] and by_id[5]["record"] is None


def test_raw_jsonl_keeps_a_body_that_is_not_json_verbatim(synced: Path) -> None:
    rows = {row["id"]: row for row in map(json.loads, read(synced, what=Payload.RAW).splitlines())}
    assert rows[5]["record"] is None and "<html" in rows[5]["body"].lower()
    assert rows[6]["record"]["born_at"] == "yesterday"  # the raw record, as the API sent it
    assert isinstance(rows[1]["record"]["friends"], str)  # upstream's comma-joined string


def test_state_filter(synced: Path) -> None:
    quarantined = [json.loads(line)["id"] for line in read(synced, states=[AnimalState.QUARANTINED]).splitlines()]
    assert quarantined == [5, 6, 7]
    both = read(synced, states=[AnimalState.QUARANTINED, AnimalState.POSTED]).splitlines()
    assert len(both) == 60 and read(synced, states=[AnimalState.DISCOVERED]) == ""


def test_csv_columns_and_friends_as_a_json_array(synced: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(read(synced, fmt=ExportFormat.CSV))))
    assert tuple(rows[0]) == CSV_FIELDS and len(rows) == 60
    by_id = {int(row["id"]): row for row in rows}
    with Journal.open(synced, readonly=True) as journal:
        posted = {r.id: json.loads(r.transformed) for r in iter_animals(journal, 1, [AnimalState.POSTED])}
    for animal_id, record in posted.items():
        row = by_id[animal_id]
        assert row["name"] == record["name"] and json.loads(row["friends"]) == record["friends"]
        assert row["born_at"] == (record["born_at"] or "")
    assert by_id[6]["state"] == "quarantined" and by_id[6]["name"] == "" and "born_at" in by_id[6]["last_error"]


def test_raw_csv_adds_the_body_verbatim(synced: Path) -> None:
    rows = {int(r["id"]): r for r in csv.DictReader(io.StringIO(read(synced, fmt=ExportFormat.CSV, what=Payload.RAW)))}
    assert "body" in rows[1] and json.loads(rows[1]["body"])["id"] == 1
    assert rows[6]["born_at"] == "yesterday" and rows[1]["friends"] == json.loads(rows[1]["body"])["friends"]
    assert "<html" in rows[5]["body"].lower() and rows[5]["name"] == ""


def test_a_body_that_is_not_utf8_is_exported_as_base64(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    body = b"\xff\xfe not utf-8"
    with Journal.open(path) as journal:
        run = journal.start_run({}, "http://x")
        with journal.transaction():
            journal.record_page(run.id, 1, [1], 1)
            journal.record_quarantined(run.id, 1, body, "body is not UTF-8", attempts=1)
    (row,) = map(json.loads, read(path, what=Payload.RAW).splitlines())
    assert row["record"] is None and base64.b64decode(row["body_base64"]) == body
    (cells,) = csv.DictReader(io.StringIO(read(path, fmt=ExportFormat.CSV, what=Payload.RAW)))
    assert cells["body"] == "base64:" + base64.b64encode(body).decode()


def test_export_to_a_file_is_atomic_and_the_cli_says_how_many(capsys, synced: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    code = main(["export", "--journal", str(synced), "--format", "csv", "--state", "posted", "--output", str(target)])
    captured = capsys.readouterr()
    assert code == 0 and captured.out == "" and "exported 57 animals" in captured.err
    assert len(target.read_text().splitlines()) == 58 and not list(tmp_path.glob("*.partial"))


def test_cli_export_to_stdout(capsys, synced: Path) -> None:
    code = main(["export", "--journal", str(synced), "--what", "raw", "--state", "quarantined"])
    out = capsys.readouterr().out
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [5, 6, 7]


def test_cli_export_refuses_an_unknown_state_in_one_line(capsys, synced: Path) -> None:
    code = main(["export", "--journal", str(synced), "--state", "lost"])
    err = capsys.readouterr().err
    assert code == 2 and "'lost' is not one of" in err and err.count("\n") == 1


def test_a_failed_export_leaves_no_partial_file(synced: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    with Journal.open(synced, readonly=True) as journal, pytest.raises(Exception):
        export_to_path(journal, target, run_id=99)  # no such run
    assert not target.exists() and not list(tmp_path.glob("*.partial"))


def _big_journal(path: Path, animals: int) -> None:
    record = json.dumps({"id": 0, "name": "Aardvark" * 8, "born_at": None, "friends": ["Cat"] * 20})
    with Journal.open(path) as journal:
        run = journal.start_run({}, "http://x")
        with journal.transaction():
            journal.db.conn.executemany(
                "INSERT INTO animals (run_id, id, page, state, attempts, transformed, discovered_at, updated_at)"
                " VALUES (?, ?, 1, 'posted', 1, ?, '', '')",
                ((run.id, animal_id, record) for animal_id in range(1, animals + 1)),
            )


@pytest.mark.slow
def test_memory_stays_flat_whatever_the_number_of_animals(tmp_path: Path) -> None:
    """Exporting 10x more animals must not take 10x the memory: rows are streamed, never gathered."""
    peaks = []
    for animals in (2_000, 12_000):
        path = tmp_path / f"{animals}.db"
        _big_journal(path, animals)

        class Sink(io.TextIOBase):
            written = 0

            def write(self, text: str) -> int:
                Sink.written += len(text)
                return len(text)

        with Journal.open(path, readonly=True) as journal:
            tracemalloc.start()
            assert export(journal, Sink(), fmt=ExportFormat.CSV) == animals
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    assert Sink.written > 12_000 * 150  # the output itself is far larger than the memory used
    assert peaks[1] < peaks[0] * 2, peaks


HOSTILE_NAMES = ["=cmd|' /C calc'!A0", "+SUM(1,2)", "-2+3", "@SUM(1,2)", "\tTab", "\rCR", "Nul\x00byte"]


def test_csv_cells_a_spreadsheet_would_run_are_neutralised_as_owasp_advises(tmp_path: Path) -> None:
    """A formula opener gets a leading quote (names, raw friends, last_error, body); a NUL is written as \\x00; a
    number stays a number, even a negative one; the JSON lines export keeps every byte."""
    path = tmp_path / "j.db"
    raws = {
        index: {"id": index, "name": name, "born_at": -1000 if index == 0 else None, "friends": '=HYPERLINK("http://evil")'}
        for index, name in enumerate(HOSTILE_NAMES)
    }
    with Journal.open(path) as journal:
        run = journal.start_run({}, "http://x")
        with journal.transaction():
            journal.record_page(run.id, 1, list(raws), 1)
            for index, raw in raws.items():
                transformed = {"id": index, "name": raw["name"], "born_at": None, "friends": ["=1+1"]}
                journal.record_fetched(run.id, index, json.dumps(raw), json.dumps(transformed), attempts=1)
            journal.record_page(run.id, 2, [10], 2)
            journal.record_quarantined(run.id, 10, "-1+1 <not json>", "@reason from upstream", attempts=1)
    expected = ["'=cmd|' /C calc'!A0", "'+SUM(1,2)", "'-2+3", "'@SUM(1,2)", "'\tTab", "'\rCR", "Nul\\x00byte"]
    for what in Payload:
        text = read(path, fmt=ExportFormat.CSV, what=what)
        assert "\x00" not in text
        rows = {int(r["id"]): r for r in csv.DictReader(io.StringIO(text, newline=""))}
        assert [rows[index]["name"] for index in range(len(HOSTILE_NAMES))] == expected, what
        assert rows[10]["last_error"] == "'@reason from upstream"
        for row in rows.values():  # no cell but a number opens with a formula opener
            for column, cell in row.items():
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), (column, cell)
                assert not cell.startswith("-") or cell.lstrip("-").isdigit(), (column, cell)
    raw = {int(r["id"]): r for r in csv.DictReader(io.StringIO(read(path, fmt=ExportFormat.CSV, what=Payload.RAW)))}
    assert raw[1]["friends"] == "'=HYPERLINK(\"http://evil\")"
    assert raw[0]["born_at"] == "-1000"  # a JSON number, not user text: a spreadsheet reads it as the number
    assert raw[10]["body"] == "'-1+1 <not json>"
    rows = [json.loads(line) for line in read(path, what=Payload.RAW).splitlines()]
    assert [row["record"]["name"] for row in rows[:7]] == HOSTILE_NAMES  # JSON lines: the exact export
