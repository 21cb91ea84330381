"""`run --shard I/N`: a shard lists, fetches and posts its own pages in its own journal, the journal keeps the
shard, and `audit`/`status` over several journals prove and show the union (tamper tests on real journals)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from animal_sync.config import Settings
from animal_sync.errors import ConfigError
from animal_sync.journal import Journal
from animal_sync.engine.pipeline import RunOutcome, start_run
from animal_sync.shards import Shard
from animal_sync.simulator import Simulator, SimulatorConfig
from animal_sync.reports.union import union_audit
from conftest import assert_one_line, query, run_cli, tamper

N = 4
PAGES = 9  # not a multiple of N: shard 0 owns 3 pages, the others 2


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The journals of 4 shards synced one after the other into one strict simulator of 90 animals."""
    folder = tmp_path_factory.mktemp("shards")
    journals = [folder / f"shard-{index}.db" for index in range(N)]
    with Simulator(SimulatorConfig(port=0, animals=PAGES * 10, chaos=0.0, strict=True)) as sim:
        for index, journal in enumerate(journals):
            result = start_run(Settings(base_url=sim.url, journal=journal, batch_size=10, shard=Shard(index, N)))
            assert result.outcome is RunOutcome.CLEAN, result.message
        verdict = sim.verify()
    assert verdict["delivered"] == PAGES * 10 and verdict["duplicates_rejected"] == 0  # the strict API refuses repeats
    return journals


@pytest.fixture
def journals(synced: list[Path], tmp_path: Path) -> list[Path]:
    """Each test's own copies, to tamper with."""
    copies = [tmp_path / path.name for path in synced]
    for path, copy in zip(synced, copies):
        shutil.copyfile(path, copy)
    return copies


def flags(paths: list[Path]) -> list[str]:
    return [flag for path in paths for flag in ("--journal", str(path))]


# -- the shard value -------------------------------------------------------------------------------------------


def test_a_shard_owns_every_nth_page_from_its_index_and_the_shards_cover_the_pages_once() -> None:
    assert Shard.parse(" 3/8 ") == Shard(3, 8) and str(Shard(3, 8)) == "3/8"
    assert list(Shard(1, 4).pages(9)) == [2, 6] and list(Shard(0, 4).pages(9)) == [1, 5, 9]
    assert sorted(page for index in range(N) for page in Shard(index, N).pages(PAGES)) == list(range(1, PAGES + 1))
    assert Shard(1, 4).owner(10) == 1 and Shard(1, 4).owner(9) == 0 and Shard(1, 4).owner(49) == 0  # 10 ids a page


@pytest.mark.parametrize("text", ["4/4", "0/0", "-1/4", "1", "a/b", "1/4/2", "", "1/-4", "²/3", "1/99999999999999999999"])
def test_a_shard_outside_0_to_n_is_refused(text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Shard.parse(text)
    assert raised.value.field == "shard"


@pytest.mark.parametrize("text", ["4/4", "0/0", "x/4"])
def test_a_bad_shard_flag_is_one_line_exit_2_and_writes_nothing(capsys, tmp_path: Path, text: str) -> None:
    journal = tmp_path / "j.db"
    code, _, err = run_cli(capsys, "run", "--journal", str(journal), "--shard", text)
    assert code == 2
    assert_one_line(err, "--shard must be I/N")
    assert not journal.exists()


def test_the_shard_comes_from_its_variable_too(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANIMAL_SYNC_SHARD", "9/4")
    code, _, err = run_cli(capsys, "run", "--journal", str(tmp_path / "j.db"))
    assert code == 2
    assert_one_line(err, "--shard must be I/N")


def test_the_shard_is_journaled_as_typed_and_comes_back_for_resume(tmp_path: Path) -> None:
    stored = Settings(journal=tmp_path / "j.db", shard=Shard(2, 4)).journaled()
    assert stored["shard"] == "2/4" and json.loads(json.dumps(stored)) == stored
    assert Settings.from_journal(stored).shard == Shard(2, 4)
    assert Settings.from_journal(Settings(journal=tmp_path / "j.db").journaled()).shard is None


# -- one shard's run -------------------------------------------------------------------------------------------


def test_each_shard_listed_fetched_and_posted_only_its_own_pages(synced: list[Path]) -> None:
    for index, journal in enumerate(synced):
        pages = {page for (page,) in query(journal, "SELECT page FROM pages")}
        assert pages == set(Shard(index, N).pages(PAGES)), journal
        ids = [animal_id for (animal_id,) in query(journal, "SELECT id FROM animals WHERE state = 'posted'")]
        assert sorted(ids) == [i for page in sorted(pages) for i in range((page - 1) * 10, page * 10)]


def test_a_shard_journal_audits_and_reports_its_own_pages(capsys, synced: list[Path]) -> None:
    code, out, _ = run_cli(capsys, "audit", "--journal", str(synced[1]))
    assert code == 0 and out.splitlines()[-1] == "OK: every discovered animal was posted exactly once"
    code, out, _ = run_cli(capsys, "status", "--json", "--journal", str(synced[1]))
    report = json.loads(out)
    assert report["shard"] == "1/4" and report["pages"] == {"listed": 2, "total": PAGES, "owned": 2}
    assert report["left"] == {"pages": 0, "animals": 0}
    code, out, _ = run_cli(capsys, "status", "--journal", str(synced[1]))
    assert "1/4: lists 2 of 9 pages" in out and "2 of 2" in out


def test_a_journal_refuses_another_shard_or_shard_count(capsys, journals: list[Path]) -> None:
    for other in (["--shard", "1/4"], ["--shard", "0/2"], []):
        code, _, err = run_cli(capsys, "run", "--journal", str(journals[0]), *other)
        assert code == 2, other
        assert_one_line(err, f"journal {journals[0]} belongs to shard 0/4, not ")
    assert query(journals[0], "SELECT count(*) FROM runs") == [(1,)]  # nothing started


def test_a_shard_past_the_last_page_owns_nothing_and_finishes_clean(tmp_path: Path) -> None:
    journals = [tmp_path / f"shard-{index}.db" for index in range(N)]
    with Simulator(SimulatorConfig(port=0, animals=20, chaos=0.0, strict=True)) as sim:  # 2 pages for 4 shards
        for index, journal in enumerate(journals):
            result = start_run(Settings(base_url=sim.url, journal=journal, shard=Shard(index, N)))
            assert result.outcome is RunOutcome.CLEAN, result.message
        assert sim.verify()["delivered"] == 20
    assert query(journals[3], "SELECT total_pages FROM runs") == [(2,)] and query(journals[3], "SELECT * FROM pages") == []
    opened = [Journal.open(path, readonly=True) for path in journals]
    try:
        report = union_audit(opened)
    finally:
        for journal in opened:
            journal.close()
    assert report.ok and report.delivered == 20, report.exception_counts


# -- the union -------------------------------------------------------------------------------------------------


def test_the_union_of_all_shards_audits_clean(capsys, synced: list[Path]) -> None:
    code, out, _ = run_cli(capsys, "audit", *flags(synced))
    assert code == 0, out
    assert out.splitlines()[0] == f"audit of 4 shard journals: 4 shards, {PAGES} pages; 90 of 90 ids delivered, 90 listed"
    assert out.splitlines()[-1].startswith("OK: all 4 shards present once; every id 0..89 listed")
    code, out, _ = run_cli(capsys, "audit", "--json", *flags(synced))
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["exception_counts"] == {}
    assert [item["shard"] for item in report["journals"]] == ["0/4", "1/4", "2/4", "3/4"]
    assert [item["audit"]["posted"] for item in report["journals"]] == [30, 20, 20, 20]


def test_a_missing_shard_journal_fails_the_union_naming_the_shard_and_its_ids(capsys, journals: list[Path]) -> None:
    code, out, _ = run_cli(capsys, "audit", "--json", *flags(journals[:3]))
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    assert report["exception_counts"] == {"missing_shard": 1, "unlisted_id": 20}
    assert report["exceptions"]["missing_shard"][0]["shard"] == "3/4"
    assert {item["id"] for item in report["exceptions"]["unlisted_id"]} == set(range(30, 40)) | set(range(70, 80))
    code, out, _ = run_cli(capsys, "audit", *flags(journals[:3]))
    assert code == 1 and "missing_shard: 1\n  shard=3/4" in out and out.endswith("NOT OK\n")


def test_two_journals_of_the_same_shard_fail_the_union_naming_both(capsys, journals: list[Path], tmp_path: Path) -> None:
    again = tmp_path / "again-1.db"
    shutil.copyfile(journals[1], again)
    code, out, _ = run_cli(capsys, "audit", "--json", *flags([*journals, again]))
    report = json.loads(out)
    assert code == 1
    assert report["exceptions"]["duplicate_shard"] == [{"shard": "1/4", "journals": [str(journals[1]), str(again)]}]
    assert report["exception_counts"]["listed_twice"] == report["exception_counts"]["delivered_twice"] == 20


def test_an_id_in_the_wrong_shard_s_journal_is_foreign(capsys, journals: list[Path]) -> None:
    # Shard 0 claims id 15 (page 2, shard 1's) as posted: listed and delivered twice, and not its own.
    tamper(journals[0], "INSERT INTO animals (run_id, id, page, state, attempts, discovered_at, updated_at)"
           " SELECT run_id, 15, 2, 'posted', 1, discovered_at, updated_at FROM animals WHERE id = 0")
    code, out, _ = run_cli(capsys, "audit", "--json", *flags(journals))
    report = json.loads(out)
    assert code == 1
    assert report["exceptions"]["foreign_id"] == [{"id": 15, "page": 2, "journal": str(journals[0]), "shard": "0/4"}]
    assert report["exceptions"]["delivered_twice"] == [{"id": 15, "journals": [str(journals[0]), str(journals[1])]}]
    assert report["exception_counts"]["journal"] == 1  # and shard 0's own audit finds the orphan it is


def test_a_shard_whose_own_audit_fails_fails_the_union_with_its_exceptions_under_its_name(
    capsys, journals: list[Path]
) -> None:
    tamper(journals[2], "UPDATE animals SET state = 'failed', last_error = 'tampered' WHERE id = 25")
    code, out, _ = run_cli(capsys, "audit", *flags(journals))
    assert code == 1
    assert f"{journals[2]}: shard 2/4, run 1 finished, 19 of 20 posted: NOT OK" in out
    assert "  failed: 1\n    id=25, reason=tampered" in out
    assert f"journal: 1\n  journal={journals[2]}, shard=2/4" in out


def test_status_over_several_journals_shows_each_shard_and_the_missing_ones(
    capsys, journals: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_cli(capsys, "status", "--json", *flags(journals[1:]))
    report = json.loads(out)
    assert code == 0 and report["shard_count"] == 4 and report["total_pages"] == PAGES and report["missing"] == [0]
    assert report["pages_listed"] == 6 and report["animals"]["posted"] == 60 and report["left"] == 0
    assert [item["status"]["shard"] for item in report["journals"]] == ["1/4", "2/4", "3/4"]
    monkeypatch.chdir(journals[0].parent)  # short names, so the table does not fold them
    code, out, _ = run_cli(capsys, "status", *flags([Path(path.name) for path in journals]))
    assert code == 0 and "4 shard journals: 4 shards, 9 pages" in out, out
    assert "shard-3.db" in out and "3/4" in out and "2 of 2" in out
    code, _, err = run_cli(capsys, "status", "--watch", *flags(journals))
    assert code == 2
    assert_one_line(err, "--watch reads one journal")
    code, _, err = run_cli(capsys, "audit", "--run", "1", *flags(journals))
    assert code == 2
    assert_one_line(err, "--run reads one journal")


def test_shard_journals_of_two_apis_fail_the_union(capsys, journals: list[Path]) -> None:
    tamper(journals[3], "UPDATE runs SET base_url = 'http://127.0.0.1:9'")
    code, out, _ = run_cli(capsys, "audit", "--json", *flags(journals))
    report = json.loads(out)
    assert code == 1 and report["exception_counts"] == {"api_differs": 1}
    assert report["exceptions"]["api_differs"][0]["apis"][str(journals[3])] == "http://127.0.0.1:9"


def test_the_union_refuses_a_dry_run_or_a_limited_shard_even_when_its_own_audit_is_ok(capsys, tmp_path: Path) -> None:
    # Shard 0/2 synced for real; shard 1/2 twice: once with --dry-run (posts nothing), once with a --limit above its
    # 40 ids (everything listed and posted, yet a test-mode run proves no full delivery). Each own audit is OK.
    real, dry, limited = (tmp_path / name for name in ("real.db", "dry.db", "limited.db"))
    with Simulator(SimulatorConfig(port=0, animals=PAGES * 10, chaos=0.0)) as sim:
        for journal, shard, extra in ((real, 0, {}), (dry, 1, {"dry_run": True}), (limited, 1, {"limit": 1000})):
            settings = Settings(base_url=sim.url, journal=journal, batch_size=10, shard=Shard(shard, 2), **extra)
            assert start_run(settings).outcome is RunOutcome.CLEAN
    for journal in (dry, limited):
        code, out, _ = run_cli(capsys, "audit", "--journal", str(journal))
        assert code == 0, out  # alone, each is OK for what it meant to do
    code, out, _ = run_cli(capsys, "audit", *flags([real, dry]))
    assert code == 1 and "exactly once" not in out and out.endswith("NOT OK\n"), out
    assert f"{dry}: shard 1/2, run 1 finished, 0 of 40 posted: its own audit is OK, but a dry run posts nothing" in out
    assert "not_a_delivery: 1\n" in out and "undelivered: 40\n" in out
    code, out, _ = run_cli(capsys, "audit", "--json", *flags([real, limited]))
    report = json.loads(out)
    assert code == 1 and not report["ok"] and report["exception_counts"] == {"not_a_delivery": 1}
    assert report["exceptions"]["not_a_delivery"][0]["reason"].startswith("a run limited to its first 1000 animals listed")
    assert report["delivered"] == PAGES * 10  # every id went out: the refusal is about what the journal proves


def test_the_same_journal_twice_is_refused_in_one_line_however_it_is_spelled(
    capsys, synced: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = synced[0]
    link = tmp_path / "link.db"
    link.symlink_to(journal)
    monkeypatch.chdir(journal.parent)
    for spelling in (str(journal), f"./{journal.name}", str(journal.parent / ".." / journal.parent.name / journal.name), str(link)):
        for command in ("audit", "status"):
            code, out, err = run_cli(capsys, command, "--journal", journal.name, "--journal", spelling)
            assert code == 2 and out == "", (spelling, out)
            assert_one_line(err, "the same journal twice (")
            assert "delivered_twice" not in err


def test_the_union_never_calls_a_batch_resting_on_an_assumption_exactly_once(capsys, continuing, tmp_path: Path) -> None:
    """A shard whose batch was re-sent after a 5xx to a body sent without 100 Continue: its own audit says "OK, not
    proven for 1 batches"; the union used to say "OK ... 10 delivered exactly once across them", proof and all."""
    from continue_server import Fate

    server = continuing(ids=list(range(10)))  # one page: shard 0/2 owns it, shard 1/2 owns nothing
    server.script(Fate(stall=0.5, fail_before=503), Fate())  # the body follows the 0.2 s wait; the 503 comes unread
    journals = [tmp_path / f"shard-{index}.db" for index in range(2)]
    for index, journal in enumerate(journals):
        settings = Settings(
            base_url=server.url, journal=journal, get_timeout=0.2, post_timeout=3.0, backoff=0.01, shard=Shard(index, 2)
        )
        assert start_run(settings).outcome is RunOutcome.CLEAN
    code, out, _ = run_cli(capsys, "audit", "--journal", str(journals[0]))
    assert code == 0 and out.splitlines()[-1].startswith("OK, not proven for 1 batch ("), out

    code, out, _ = run_cli(capsys, "audit", *flags(journals))

    assert "10 delivered exactly once" not in out, out
    assert out.splitlines()[-1].startswith("OK, not proven for 1 batch (10 animals"), out
    assert "  resting on an assumption, not proven: 1 batch" in out  # under the journal that holds it
    code, out, _ = run_cli(capsys, "audit", "--json", *flags(journals))
    report = json.loads(out)
    assert report["ok"] and report["proven"] is False
