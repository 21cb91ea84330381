"""`export`: stream a run's animals out of the journal as JSON lines or CSV, in constant memory.

Rows come from `queries.iter_animals` a slice at a time and are written as they come, so a million
animals cost what a thousand do. Each row carries its state, batch and last error next to the payload.

JSON lines: {"id", "state", "batch_id", "last_error", "record"}; `record` is the payload parsed as JSON
(null when the animal has none yet). A raw body that is not JSON is kept as `body` (text) or
`body_base64` (bytes that are not UTF-8) with `record` null, so nothing the API sent is lost.

CSV (RFC 4180, CRLF line ends): id, state, batch_id, last_error, name, born_at, friends, one row per animal.
Values that are not text (a list, a number) are written as JSON: transformed `friends` is a JSON array such as
["Cat","Dog"], never a joined string, so names holding commas or semicolons survive. `--what raw` adds `body`,
the raw body ("base64:..." for bytes that are not UTF-8), since raw records may hold anything.

A CSV is opened in spreadsheets, which run a cell that opens with `=`, `+`, `-` or `@` as a formula (DDE and
HYPERLINK attacks), so every text cell that opens with one of those, a tab or a CR gets a leading `'`, as OWASP
advises (names, raw `friends`, last_error, body alike). A JSON number is written as a number: a cell that is only a
number runs nothing, and quoting it would turn a raw born_at of -1000 into text. A NUL, which spreadsheets cut
cells at, is written as the four characters `\\x00`. The JSON lines export is the exact one: it changes nothing.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import OutputError
from ..journal import AnimalState, Journal, iter_animals, select_run
from .formats import ExportFormat, Payload

__all__ = ["CSV_FIELDS", "ExportFormat", "Payload", "export", "export_rows", "export_to_path", "write_csv", "write_jsonl"]

CSV_FIELDS = ("id", "state", "batch_id", "last_error", "name", "born_at", "friends")
RECORD_FIELDS = ("name", "born_at", "friends")


def _parse(payload: str | bytes | None) -> tuple[Any, dict[str, str]]:
    """(parsed JSON or None, the body kept aside when it does not parse)."""
    if payload is None:
        return None, {}
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return None, {"body_base64": base64.b64encode(payload).decode("ascii")}
    try:
        return json.loads(payload), {}
    except (ValueError, RecursionError):  # not JSON, or nested past the recursion limit: kept as text all the same
        return None, {"body": payload}


def export_rows(
    journal: Journal, *, what: Payload = Payload.TRANSFORMED, states: Iterable[AnimalState] = (), run_id: int | None = None
) -> Iterator[dict[str, Any]]:
    """The run's animals in id order as plain dicts, one at a time: id, state, batch_id, last_error, payload."""
    run = select_run(journal, run_id)
    for animal in iter_animals(journal, run.id, states):
        payload = animal.raw if what is Payload.RAW else animal.transformed
        yield {"id": animal.id, "state": animal.state, "batch_id": animal.batch_id, "last_error": animal.last_error, "payload": payload}


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    count = 0
    for row in rows:
        record, kept = _parse(row.pop("payload"))
        out.write(json.dumps({**row, "record": record, **kept}, ensure_ascii=False) + "\n")
        count += 1
    return count


FORMULA_OPENERS = ("=", "+", "-", "@", "\t", "\r")  # OWASP's list: what a spreadsheet may read as a formula


def _text_cell(text: str) -> str:
    """Text as a CSV cell no spreadsheet runs: a formula opener quoted away, a NUL shown as `\\x00`."""
    text = text.replace("\x00", "\\x00")
    return "'" + text if text.startswith(FORMULA_OPENERS) else text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return _text_cell(value)
    if (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and math.isfinite(value)):
        return json.dumps(value)  # a number, never text: -5 stays a number a spreadsheet reads as -5
    # A list or an object as JSON text: it opens with [ or {, and json.dumps writes any NUL inside as \u0000.
    return _text_cell(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def write_csv(rows: Iterable[dict[str, Any]], out: IO[str], *, with_body: bool = False) -> int:
    # RFC 4180 line ends: with "\n" alone, a CR inside a value was left unquoted and split its row in two.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS + (("body",) if with_body else ()))
    count = 0
    for row in rows:
        payload = row.pop("payload")
        record, _ = _parse(payload)
        fields = record if isinstance(record, dict) else {}
        cells = [_cell(row[name]) for name in CSV_FIELDS[:4]] + [_cell(fields.get(name)) for name in RECORD_FIELDS]
        if with_body:
            if isinstance(payload, bytes):
                try:
                    payload = payload.decode("utf-8")
                except UnicodeDecodeError:
                    payload = "base64:" + base64.b64encode(payload).decode("ascii")
            cells.append(_text_cell(payload or ""))
        writer.writerow(cells)
        count += 1
    return count


def export(
    journal: Journal,
    out: IO[str],
    *,
    fmt: ExportFormat = ExportFormat.JSONL,
    what: Payload = Payload.TRANSFORMED,
    states: Iterable[AnimalState] = (),
    run_id: int | None = None,
) -> int:
    """Write the run's animals to `out`; returns how many were written."""
    rows = export_rows(journal, what=what, states=states, run_id=run_id)
    if fmt is ExportFormat.CSV:
        return write_csv(rows, out, with_body=what is Payload.RAW)
    return write_jsonl(rows, out)


def export_to_path(journal: Journal, path: Path, **options: Any) -> int:
    """Export into `path` through a temporary file renamed at the end: a reader never sees half a file."""
    if path.is_dir():  # found before the export, not by the rename after it
        raise OutputError(f"cannot export to {path}: it is a directory")
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as out:
            count = export(journal, out, **options)
        os.replace(partial, path)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a missing directory, no room, no permission: one line, not a traceback
            raise OutputError(f"cannot export to {path}: {exc.strerror or exc}") from None
        raise
    return count
