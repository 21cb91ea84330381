"""One decode-and-transform path for a detail body: the pipeline's workers and the audit's re-check both use it.

Pure: bytes or text in, a frozen verdict out, so it runs on a worker thread and proves the same thing later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .transform import InvalidRecord, canonical_json, check_matches, transform

__all__ = ["TOO_DEEP", "Examined", "examine"]

TOO_DEEP = "body is nested too deeply to decode (past Python's recursion limit)"


@dataclass(frozen=True)
class Examined:
    """A detail body judged: its text (bytes kept when not UTF-8) and its outgoing record, or why it has none."""

    raw: str | bytes
    transformed: str | None  # canonical JSON of the outgoing record
    reason: str | None  # why the record is quarantined; None when it transformed


def examine(body: bytes | str, animal_id: int) -> Examined:
    """Decode, check that the body is the animal asked for, and transform it to its canonical outgoing text."""
    if isinstance(body, bytes):
        try:
            raw: str | bytes = body.decode("utf-8")
        except UnicodeDecodeError:
            return Examined(body, None, "body is not UTF-8")
    else:
        raw = body
    try:
        record = json.loads(raw)
    except ValueError as exc:
        return Examined(raw, None, f"body is not JSON: {exc}")
    except RecursionError:  # 100,000 nested `[`: bad data to quarantine, never a crash of the run
        return Examined(raw, None, TOO_DEEP)
    try:
        check_matches(record, animal_id)
        outgoing = transform(record)
    except InvalidRecord as exc:
        return Examined(raw, None, str(exc))
    except RecursionError:  # decoded just under the limit, then too deep to show in a reason (repr recurses too)
        return Examined(raw, None, TOO_DEEP)
    return Examined(raw, canonical_json(outgoing), None)
