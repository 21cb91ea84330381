"""Pure functions that turn one raw upstream detail record into the record POSTed to /home."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "InvalidRecord",
    "born_at_iso",
    "canonical_json",
    "check_matches",
    "friends_list",
    "transform",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Reasons are stored in the journal and shown to people: a huge bad value must not flood them.
_SHOW_LIMIT = 60


class InvalidRecord(ValueError):
    """A raw record that cannot be transformed; str(exc) is the human-readable reason kept in the journal."""


def _show(value: Any) -> str:
    """repr() of a bad value, cut short so one odd record cannot bloat a reason."""
    text = repr(value)
    if len(text) > _SHOW_LIMIT:
        return text[: _SHOW_LIMIT - 3] + "..."
    return text


def _is_int(value: Any) -> bool:
    """True for a real integer; bool is an int subclass but never a valid id or timestamp."""
    return isinstance(value, int) and not isinstance(value, bool)


def _require_object(raw: Any) -> None:
    if not isinstance(raw, Mapping):
        raise InvalidRecord(f"record is not a JSON object (got {type(raw).__name__})")


def _record_id(raw: Mapping[str, Any]) -> int:
    value = raw.get("id")
    if value is None:
        raise InvalidRecord("missing id")
    if not _is_int(value) or value < 0:  # ids start at 0: animal 0 is as real as any other
        raise InvalidRecord(f"id is not a non-negative integer: {_show(value)}")
    return value


def _record_name(raw: Mapping[str, Any]) -> str:
    value = raw.get("name")
    if value is None:
        raise InvalidRecord("missing name")
    if not isinstance(value, str):
        raise InvalidRecord(f"name is not a string: {_show(value)}")
    if not value:
        raise InvalidRecord("name is empty")
    # Kept byte for byte: the name is the animal's identity downstream, not ours to tidy.
    return value


def _clean_names(parts: list[str]) -> list[str]:
    """Strip each name and drop blanks, keeping order and duplicates."""
    stripped = (part.strip() for part in parts)
    return [part for part in stripped if part]


def friends_list(value: str | list[str]) -> list[str]:
    """Normalise friends to a list of names.

    Upstream sends a comma-joined string ("" when none), but a list is accepted too so the
    function is safe on already-transformed data. Blank entries are dropped, so the result is
    never [""]; duplicates are kept because upstream may mean them.
    """
    if isinstance(value, str):
        return _clean_names(value.split(","))
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                raise InvalidRecord(f"friends list holds a non-string: {_show(item)}")
        return _clean_names(value)
    raise InvalidRecord(f"friends is neither a comma-joined string nor a list: {_show(value)}")


def born_at_iso(value: int | str | None) -> str | None:
    """Normalise born_at to UTC "YYYY-MM-DDTHH:MM:SS.mmmZ", or None when unknown.

    An int is epoch milliseconds, converted with integer arithmetic so no precision is lost.
    A str is parsed with datetime.fromisoformat: naive means UTC, an offset is converted to
    UTC, and digits below the millisecond are truncated toward the past (floored), never
    rounded, so a time never moves into the next millisecond. Anything else, or a value
    outside years 1-9999, raises InvalidRecord.
    """
    if value is None:
        return None
    try:
        if _is_int(value):
            moment = _EPOCH + timedelta(milliseconds=value)
        elif isinstance(value, str):
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                moment = parsed.replace(tzinfo=UTC)
            else:
                moment = parsed.astimezone(UTC)
        else:
            raise TypeError
    except (TypeError, ValueError, OverflowError):
        raise InvalidRecord(
            f"born_at is not epoch milliseconds, an ISO-8601 string or null: {_show(value)}"
        ) from None
    # isoformat truncates (not rounds) to milliseconds and always pads the year to 4 digits.
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def transform(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one raw detail record and return the outgoing record; raise InvalidRecord(reason) if it is malformed."""
    _require_object(raw)
    record_id = _record_id(raw)
    name = _record_name(raw)
    born_at = born_at_iso(raw.get("born_at"))
    friends_raw = raw.get("friends")
    friends = [] if friends_raw is None else friends_list(friends_raw)
    # Built in this order on purpose: canonical_json keeps insertion order.
    return {"id": record_id, "name": name, "born_at": born_at, "friends": friends}


def check_matches(raw: Mapping[str, Any], expected_id: int) -> None:
    """Raise InvalidRecord when upstream answered a detail request with a different animal."""
    _require_object(raw)
    got = raw.get("id")
    # `==` alone would let True stand in for 1 or 7.0 for 7.
    if not (_is_int(got) and got == expected_id):
        raise InvalidRecord(f"id mismatch: asked for {expected_id}, got {_show(got)}")


def canonical_json(record: Mapping[str, Any]) -> str:
    """One stable text form of a transformed record, used to store and compare payloads."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))
