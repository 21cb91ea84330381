"""Unit tests for animal_sync.transform: raw upstream record -> outgoing /home record."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta

import pytest

from animal_sync.transform import (
    InvalidRecord,
    born_at_iso,
    canonical_json,
    check_matches,
    friends_list,
    transform,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MS = -62135596800000  # 0001-01-01T00:00:00.000Z
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
ISO_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

COBRA_RAW = {"id": 1, "name": "Cobra", "born_at": 1444102907778, "friends": "Wildcat,Dog"}
COBRA_OUT = {"id": 1, "name": "Cobra", "born_at": "2015-10-06T03:41:47.778Z", "friends": ["Wildcat", "Dog"]}


def raw(**overrides):
    """A valid raw record with some fields replaced; a value of ... removes the key."""
    record = dict(COBRA_RAW, **overrides)
    return {key: value for key, value in record.items() if value is not ...}


# --- transform: the happy path ------------------------------------------------------------


def test_transform_example_record():
    assert transform(COBRA_RAW) == COBRA_OUT


def test_transform_key_order_is_id_name_born_at_friends():
    shuffled = {"friends": "a", "born_at": None, "name": "Cobra", "id": 1}
    assert list(transform(shuffled)) == ["id", "name", "born_at", "friends"]


def test_transform_ignores_extra_fields():
    out = transform(raw(color="green", _links={"self": "/animals/1"}, born_at_ms=5))
    assert out == COBRA_OUT


@pytest.mark.parametrize("born_at", [None, ...])
def test_transform_born_at_missing_or_null_is_none(born_at):
    assert transform(raw(born_at=born_at))["born_at"] is None


@pytest.mark.parametrize("friends", [None, ..., "", [], " , ,"])
def test_transform_no_friends_is_empty_list(friends):
    assert transform(raw(friends=friends))["friends"] == []


@pytest.mark.parametrize(
    "name",
    ["Ñandú 🐍", "  padded  ", "x" * 10_000, "名前"],
    ids=["non-ascii", "padded", "long", "cjk"],
)
def test_transform_keeps_name_exactly(name):
    assert transform(raw(name=name))["name"] == name


def test_transform_does_not_share_or_mutate_the_friends_list():
    friends = ["Wildcat", " Dog "]
    record = raw(friends=friends)
    out = transform(record)
    out["friends"].append("Owl")
    assert friends == ["Wildcat", " Dog "]
    assert record["friends"] is friends


def test_transform_accepts_iso_born_at():
    assert transform(raw(born_at="2015-10-06T05:41:47.778+02:00")) == COBRA_OUT


# --- transform: invalid records ------------------------------------------------------------


@pytest.mark.parametrize("value", [[COBRA_RAW], "Cobra", None, 42])
def test_transform_rejects_non_object(value):
    with pytest.raises(InvalidRecord, match=r"^record is not a JSON object \(got \w+\)$"):
        transform(value)


def test_transform_non_object_reason_names_the_type():
    with pytest.raises(InvalidRecord) as info:
        transform([])
    assert str(info.value) == "record is not a JSON object (got list)"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": ...}, "id"),
        ({"id": None}, "id"),
        ({"id": "x"}, "id"),
        ({"id": "1"}, "id"),
        ({"id": -3}, "id"),
        ({"id": 1.0}, "id"),
        ({"id": True}, "id"),
        ({"id": False}, "id"),
        ({"id": [1]}, "id"),
        ({"name": ...}, "name"),
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": 42}, "name"),
        ({"name": ["Cobra"]}, "name"),
        ({"born_at": 1.4e12}, "born_at"),
        ({"born_at": 1444102907778.0}, "born_at"),
        ({"born_at": True}, "born_at"),
        ({"born_at": False}, "born_at"),
        ({"born_at": [1444102907778]}, "born_at"),
        ({"born_at": {"ms": 1}}, "born_at"),
        ({"born_at": "yesterday"}, "born_at"),
        ({"born_at": ""}, "born_at"),
        ({"born_at": "2015-13-01T00:00:00Z"}, "born_at"),
        ({"born_at": "1444102907778"}, "born_at"),
        ({"born_at": MAX_MS + 1}, "born_at"),
        ({"born_at": MIN_MS - 1}, "born_at"),
        ({"born_at": 10**30}, "born_at"),
        ({"born_at": "9999-12-31T23:59:59-01:00"}, "born_at"),
        ({"born_at": "0001-01-01T00:30:00+01:00"}, "born_at"),
        ({"friends": 42}, "friends"),
        ({"friends": {"a": 1}}, "friends"),
        ({"friends": True}, "friends"),
        ({"friends": ["Dog", 7]}, "friends"),
        ({"friends": ["Dog", None]}, "friends"),
    ],
)
def test_transform_invalid_reason_mentions_field(overrides, field):
    with pytest.raises(InvalidRecord) as info:
        transform(raw(**overrides))
    assert field in str(info.value)


def test_animal_0_is_an_animal():
    # Upstream's ids start at 0 (its own example is {"id": 0, "name": "Cobra", ...}); 0 must not read as "no id".
    assert transform(raw(id=0)) == COBRA_OUT | {"id": 0}
    assert check_matches(raw(id=0), 0) is None
    with pytest.raises(InvalidRecord, match="asked for 0, got False"):
        check_matches(raw(id=False), 0)


def test_invalid_record_is_a_value_error():
    assert issubclass(InvalidRecord, ValueError)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"id": ...}, "missing id"),
        ({"id": "x"}, "id is not a non-negative integer: 'x'"),
        ({"id": True}, "id is not a non-negative integer: True"),
        ({"id": False}, "id is not a non-negative integer: False"),
        ({"id": -1}, "id is not a non-negative integer: -1"),
        ({"name": ...}, "missing name"),
        ({"born_at": "yesterday"}, "born_at is not epoch milliseconds, an ISO-8601 string or null: 'yesterday'"),
        ({"born_at": 1.4e12}, "born_at is not epoch milliseconds, an ISO-8601 string or null: 1400000000000.0"),
        ({"friends": 42}, "friends is neither a comma-joined string nor a list: 42"),
    ],
)
def test_transform_exact_reasons(overrides, reason):
    with pytest.raises(InvalidRecord) as info:
        transform(raw(**overrides))
    assert str(info.value) == reason


@pytest.mark.parametrize("field", ["id", "name", "born_at", "friends"])
def test_reason_truncates_huge_values(field):
    huge = {"bogus": "x" * 5000}
    with pytest.raises(InvalidRecord) as info:
        transform(raw(**{field: huge}))
    reason = str(info.value)
    assert field in reason
    assert len(reason) < 150
    assert reason.endswith("...")


# --- friends_list ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        (" ", []),
        (",", []),
        ("Wildcat,Dog", ["Wildcat", "Dog"]),
        ("a, b", ["a", "b"]),
        ("a,,b, ", ["a", "b"]),
        ("  Wild cat  ,\tDog\n", ["Wild cat", "Dog"]),
        ("Dog,Dog", ["Dog", "Dog"]),
        ("Ñandú,Émeu", ["Ñandú", "Émeu"]),
        ("Zebra,Ant,Mole", ["Zebra", "Ant", "Mole"]),
    ],
)
def test_friends_list_from_string(value, expected):
    assert friends_list(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], []),
        ([""], []),
        (["Wildcat", "Dog"], ["Wildcat", "Dog"]),
        ([" a ", "", "  ", "b"], ["a", "b"]),
        (["Dog", "Dog"], ["Dog", "Dog"]),
    ],
)
def test_friends_list_from_list(value, expected):
    assert friends_list(value) == expected


@pytest.mark.parametrize("value", ["", ",", " , ", [""], ["  "]])
def test_friends_list_never_holds_blank_names(value):
    assert "" not in friends_list(value)


@pytest.mark.parametrize("value", [42, 1.5, {"a": 1}, None, ("a", "b"), ["a", 1], [["a"]]])
def test_friends_list_rejects_other_types(value):
    with pytest.raises(InvalidRecord, match="friends"):
        friends_list(value)


# --- born_at_iso --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (1444102907778, "2015-10-06T03:41:47.778Z"),
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (999, "1970-01-01T00:00:00.999Z"),
        (1000, "1970-01-01T00:00:01.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (-86_400_000, "1969-12-31T00:00:00.000Z"),
        (MAX_MS, "9999-12-31T23:59:59.999Z"),
        (MIN_MS, "0001-01-01T00:00:00.000Z"),
        (253402214400001, "9999-12-31T00:00:00.001Z"),
        (-1444102907778, "1924-03-28T20:18:12.222Z"),
    ],
)
def test_born_at_iso_from_milliseconds(ms, expected):
    assert born_at_iso(ms) == expected


def test_born_at_iso_none():
    assert born_at_iso(None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2015-10-06T03:41:47.778Z", "2015-10-06T03:41:47.778Z"),
        ("2015-10-06T03:41:47.778+00:00", "2015-10-06T03:41:47.778Z"),
        ("2015-10-06T05:41:47.778+02:00", "2015-10-06T03:41:47.778Z"),
        ("2015-10-05T23:00:00-05:00", "2015-10-06T04:00:00.000Z"),
        ("2015-10-06T03:41:47.778", "2015-10-06T03:41:47.778Z"),
        ("2015-10-06T03:41:47.778999Z", "2015-10-06T03:41:47.778Z"),
        ("2015-10-06T03:41:47.000999", "2015-10-06T03:41:47.000Z"),
        ("1969-12-31T23:59:59.999999Z", "1969-12-31T23:59:59.999Z"),
        ("2015-10-06T03:41:47Z", "2015-10-06T03:41:47.000Z"),
        ("2015-10-06T03:41:47.5Z", "2015-10-06T03:41:47.500Z"),
        ("2015-10-06", "2015-10-06T00:00:00.000Z"),
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z"),
    ],
)
def test_born_at_iso_from_iso_string(text, expected):
    assert born_at_iso(text) == expected


@pytest.mark.parametrize(
    "value",
    [
        1.4e12,
        0.0,
        True,
        False,
        [],
        {},
        "yesterday",
        "",
        "2015-10-06T25:00:00Z",
        MAX_MS + 1,
        MIN_MS - 1,
        10**30,
        -(10**30),
        "9999-12-31T23:59:59-01:00",
    ],
)
def test_born_at_iso_rejects(value):
    with pytest.raises(InvalidRecord, match="^born_at is not epoch milliseconds, an ISO-8601 string or null: "):
        born_at_iso(value)


def _epoch_ms(text: str) -> int:
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(milliseconds=1)


def test_born_at_iso_round_trips_random_milliseconds_exactly():
    rng = random.Random(20151006)
    samples = [rng.randint(MIN_MS, MAX_MS) for _ in range(3000)]
    # Also around the epoch and typical birth dates, where off-by-one-ms bugs hide.
    samples += [rng.randint(-10**6, 10**6) for _ in range(500)]
    samples += [rng.randint(0, 2_000_000_000_000) for _ in range(1500)]
    for ms in samples:
        text = born_at_iso(ms)
        assert ISO_SHAPE.match(text), text
        assert _epoch_ms(text) == ms, (ms, text)
        # The normalised form is a fixed point: feeding it back changes nothing.
        assert born_at_iso(text) == text


# --- check_matches --------------------------------------------------------------------------------


def test_check_matches_accepts_same_id():
    assert check_matches(raw(id=7), 7) is None


def test_check_matches_reports_mismatch():
    with pytest.raises(InvalidRecord) as info:
        check_matches(raw(id=1000007), 7)
    assert str(info.value) == "id mismatch: asked for 7, got 1000007"


@pytest.mark.parametrize("got", [True, 1.0, "1", None, ...])
def test_check_matches_rejects_lookalike_ids(got):
    with pytest.raises(InvalidRecord, match="id mismatch: asked for 1, got "):
        check_matches(raw(id=got), 1)


def test_check_matches_rejects_non_object():
    with pytest.raises(InvalidRecord, match="not a JSON object"):
        check_matches([{"id": 1}], 1)


# --- canonical_json ---------------------------------------------------------------------------------


def test_canonical_json_exact_text():
    assert canonical_json(COBRA_OUT) == (
        '{"id":1,"name":"Cobra","born_at":"2015-10-06T03:41:47.778Z","friends":["Wildcat","Dog"]}'
    )


def test_canonical_json_keeps_non_ascii():
    text = canonical_json(transform(raw(name="Ñandú 🐍", friends="Émeu")))
    assert "Ñandú 🐍" in text
    assert "Émeu" in text
    assert "\\u" not in text


def test_canonical_json_is_stable_across_equal_inputs():
    first = canonical_json(transform(dict(COBRA_RAW)))
    reordered = {
        "friends": "Wildcat, Dog",
        "born_at": "2015-10-06T03:41:47.778Z",
        "id": 1,
        "name": "Cobra",
        "extra": 1,
    }
    second = canonical_json(transform(reordered))
    assert first == second
    assert json.loads(first) == COBRA_OUT
