"""Hostile bodies end to end against a scripted server: a record or a page nested 100,000 deep is bad data, not a
crash; markup in a name reaches the HTML report as text."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from animal_sync.client.api import AnimalsApi, FetchFailed
from animal_sync.config import Settings
from animal_sync.examine import examine
from conftest import audited, query, run_cli, tamper
from scripted_server import ScriptedServer, listing

NESTED = b"[" * 100_000


def detail(animal_id: int, **fields: object) -> bytes:
    return json.dumps({"id": animal_id, "name": f"a{animal_id}", "born_at": None, "friends": "", **fields}).encode()


def items(ids: range) -> list[dict[str, object]]:
    return [{"id": i, "name": f"a{i}", "born_at": None} for i in ids]


@pytest.mark.parametrize("body", [NESTED, b"[" * 5_000 + b"]" * 5_000, b'{"id": 3, "name": "x", "friends": ' + b"[" * 980 + b"]" * 980 + b"}"])
def test_a_deeply_nested_detail_is_a_reason_not_a_recursion_error(body: bytes) -> None:
    examined = examine(body, 3)
    assert examined.transformed is None and examined.reason
    assert "nested too deeply" in examined.reason or "friends" in examined.reason


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def decodes(body: bytes) -> bool:
    try:
        json.loads(body)
    except RecursionError:
        return False
    return True


def test_no_depth_near_the_recursion_limit_escapes_as_a_recursion_error() -> None:
    """Just under the limit a body decodes, and then repr or dumps (a reason, a digest) may recurse past it."""
    deepest = next(d for d in range(sys.getrecursionlimit(), 0, -1) if decodes(nested(d)))  # from this frame
    depths = range(deepest - 40, deepest + 5)  # the callee's frames move the edge by a few levels: cross it
    for depth in depths:
        for body in (nested(depth), b'{"id": 3, "name": "x", "born_at": ' + nested(depth) + b"}"):
            assert examine(body, 3).transformed is None
    shapes = {
        "whole": lambda inner: inner,
        "item": lambda inner: b'{"page": 1, "total_pages": 1, "items": [' + inner + b"]}",
        "id": lambda inner: b'{"page": 1, "total_pages": 1, "items": [{"id": ' + inner + b"}]}",
        "total": lambda inner: b'{"page": 1, "total_pages": ' + inner + b', "items": []}',
    }
    with ScriptedServer({}, {}, 1) as server:
        api = AnimalsApi(Settings(base_url=server.url, retries=0))
        try:
            for name, shape in shapes.items():
                for depth in depths:
                    server.pages[1] = shape(nested(depth))
                    try:
                        page = api.list_page(1)
                    except FetchFailed as exc:
                        assert str(exc).startswith("page 1: not a listing"), (name, depth, exc)
                    else:  # decoded: the deep item is set aside with its reason, never an id
                        assert page.ids == () and len(page.bad_items) == (name in ("item", "id")), (name, depth)
        finally:
            api.close()


def test_a_nested_detail_record_is_quarantined_and_the_run_goes_on(capsys, restore_signals, tmp_path: Path) -> None:
    details = {i: detail(i) for i in range(20)} | {3: NESTED}
    journal = str(tmp_path / "j.db")
    with ScriptedServer({1: listing(1, 2, items(range(10))), 2: listing(2, 2, items(range(10, 20)))}, details, 2) as api:
        code, out, err = run_cli(capsys, "run", "--base-url", api.url, "--journal", journal, "--progress", "off")
        assert "Traceback" not in err and "RecursionError" not in err + out
        assert code == 1, err  # finished, with an exception to name: the quarantined record
        assert sorted(api.delivered) == [i for i in range(20) if i != 3] and max(api.delivered.values()) == 1
    (state, reason, raw), = query(Path(journal), "SELECT state, last_error, raw FROM animals WHERE id = 3")
    assert state == "quarantined" and reason.startswith("body is nested too deeply to decode") and len(raw) == len(NESTED)
    report = audited(Path(journal))
    assert report["run_state"] == "finished" and report["posted"] == 19
    assert report["exception_counts"] == {"quarantined": 1}
    code, out, _ = run_cli(capsys, "audit", "--journal", journal)
    assert code == 1 and "quarantined: 1\n  id=3, reason=body is nested too deeply to decode" in out
    for what in ("raw", "transformed"):  # the raw body kept in the journal exports too
        for fmt in ("jsonl", "csv"):
            code, out, err = run_cli(capsys, "export", "--journal", journal, "--what", what, "--format", fmt)
            assert code == 0 and "Traceback" not in err
    code, out, err = run_cli(capsys, "report", "--html", str(tmp_path / "r.html"), "--journal", journal)
    assert code == 0 and "audit NOT OK (1 exceptions)" in out


def test_a_nested_listing_page_fails_like_any_malformed_page(capsys, restore_signals, tmp_path: Path) -> None:
    details = {i: detail(i) for i in range(30)}
    pages = {1: listing(1, 3, items(range(10))), 2: NESTED, 3: listing(3, 3, items(range(20, 30)))}
    journal = str(tmp_path / "j.db")
    with ScriptedServer(pages, details, 3) as api:
        for command in ("run", "resume"):  # every resume meets the same page: the same words, never a crash
            code, out, err = run_cli(capsys, command, "--base-url", api.url, "--journal", journal, "--progress", "off")
            assert "Traceback" not in err and "RecursionError" not in err + out
            assert code != 0 and "page 2" in err, err
            (state,), = query(Path(journal), "SELECT state FROM runs")
            assert state != "running"
        assert sorted(api.delivered) == [*range(10), *range(20, 30)] and max(api.delivered.values()) == 1
    report = audited(Path(journal))
    assert not report["ok"] and report["exceptions"]["unlisted_page"] == [{"page": 2}]


SCRIPT = "<script>alert(1)</script>"


def test_markup_from_upstream_reaches_the_html_report_as_text(capsys, restore_signals, tmp_path: Path) -> None:
    """An animal named <script>, a bad born_at with an onload, a listing item of markup: all shown, none run."""
    from test_html_report import Page  # the page's tags, attributes and visible text

    listed = [{"id": 0, "name": SCRIPT}, {"id": 1, "name": "b"}, {"id": "<script>alert(2)</script>", "name": SCRIPT}]
    details = {0: detail(0, name=SCRIPT), 1: detail(1, name='<img src=x onerror="alert(3)">', born_at="<svg onload=alert(4)>")}
    journal = tmp_path / "j.db"
    with ScriptedServer({1: listing(1, 1, listed)}, details, 1) as api:
        code, _, err = run_cli(capsys, "run", "--base-url", api.url, "--journal", str(journal), "--progress", "off")
        assert code == 1 and api.delivered == {0: 1}, err
    # The posted record no longer matches its raw body: the audit shows both, with the name, on the page.
    tamper(journal, "UPDATE animals SET transformed = replace(transformed, '\"friends\":[]', '\"friends\":[\"x\"]') WHERE id = 0")
    target = tmp_path / "report.html"
    code, out, _ = run_cli(capsys, "report", "--html", str(target), "--journal", str(journal))
    assert code == 0 and "audit NOT OK (3 exceptions)" in out, out
    page = Page(target.read_text(encoding="utf-8"))
    assert page.count("script") == 0 and page.count("img") == 0
    assert page.count("svg") == 4  # the report's own charts, and nothing an upstream value opened
    for tag, attrs in page.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "alert" not in " ".join(str(value) for value in attrs.values()), (tag, attrs)
    words = page.words
    for shown in (SCRIPT, "<script>alert(2)</script>", "<svg onload=alert(4)>"):
        assert shown in words, shown
    assert "mismatch (1)" in words and "bad_listing_item (1)" in words and "quarantined (1)" in words
