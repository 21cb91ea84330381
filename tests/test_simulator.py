"""The bundled Animals API simulator, exercised over real HTTP on 127.0.0.1 the way clients meet it."""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any

import pytest
import requests

from animal_sync.errors import SimulatorError
from animal_sync.simulator import (
    ANIMAL_NAMES,
    BORN_MAX_MS,
    BORN_MIN_MS,
    Chaos,
    Simulator,
    SimulatorConfig,
    SimulatorProcess,
    default_total_animals,
    exactly_once,
    expected_home_record,
    generate_animal,
    serve,
)

LIST = "/animals/v1/animals"
HOME = "/animals/v1/home"


def get(sim: Simulator, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(sim.url + path, timeout=kwargs.pop("timeout", 5), **kwargs)


def post(sim: Simulator, payload: Any, **kwargs: Any) -> requests.Response:
    return requests.post(sim.url + HOME, json=payload, timeout=kwargs.pop("timeout", 5), **kwargs)


def records(sim: Simulator, ids: range | list[int]) -> list[dict[str, Any]]:
    return [sim.expected_record(i) for i in ids]


def first_id(seed: int, total: int, test: Any) -> int:
    return next(i for i in range(total) if test(generate_animal(seed, i)))


# --------------------------------------------------------------------------- shapes


def test_root_says_hello_as_json_over_keep_alive(simulator):
    sim = simulator(animals=20)
    connection = http.client.HTTPConnection("127.0.0.1", int(sim.url.rsplit(":", 1)[1]), timeout=5)
    sockets = []
    for _ in range(3):
        connection.request("GET", "/")
        response = connection.getresponse()
        assert (response.status, response.version) == (200, 11)
        assert response.getheader("Content-Type") == "application/json"
        assert json.loads(response.read()) == "Hello!"
        sockets.append(connection.sock)
    connection.close()
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3, "connection was not kept alive"


def test_list_page_shape_and_order(simulator):
    sim = simulator(animals=250)
    body = get(sim, f"{LIST}?page=2").json()
    assert body["page"] == 2 and body["total_pages"] == 25
    assert [item["id"] for item in body["items"]] == list(range(10, 20))
    assert all(set(item) == {"id", "name", "born_at"} for item in body["items"])
    assert get(sim, LIST).json()["items"][0]["id"] == 0  # page defaults to 1, which starts at animal 0


@pytest.mark.parametrize("page", ["abc", "1.5"])
def test_list_rejects_a_page_that_is_no_integer_with_fastapis_422(simulator, page):
    response = get(simulator(animals=20), f"{LIST}?page={page}")
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"], error["input"]) == ("int_parsing", ["query", "page"], page)


@pytest.mark.parametrize("page", ["0", "-1"])
def test_list_rejects_a_page_below_1_with_400(simulator, page):
    response = get(simulator(animals=20), f"{LIST}?page={page}")
    assert response.status_code == 400
    assert "page" in response.json()["detail"]


def test_ids_run_from_0_in_full_pages_of_10_and_a_page_past_the_end_is_empty(simulator):
    sim = simulator(animals=30)
    pages = [get(sim, f"{LIST}?page={n}").json() for n in (1, 2, 3)]
    assert [[item["id"] for item in page["items"]] for page in pages] == [
        list(range(0, 10)), list(range(10, 20)), list(range(20, 30))
    ]
    assert {page["total_pages"] for page in pages} == {3} == {sim.total_pages}
    past = get(sim, f"{LIST}?page=4")
    assert past.status_code == 200
    assert past.json() == {"page": 4, "total_pages": 3, "items": []}
    assert get(sim, f"{LIST}/0").json() == generate_animal(1, 0)


@pytest.mark.parametrize("animals", [25, 5, -10])
def test_a_partial_last_page_is_refused_like_upstream_never_has_one(animals):
    with pytest.raises(SimulatorError, match="whole pages of 10"):
        Simulator(SimulatorConfig(animals=animals))


def test_detail_shape_agrees_with_list_item(simulator):
    sim = simulator(animals=100, seed=7)
    for item in get(sim, f"{LIST}?page=5").json()["items"]:
        detail = get(sim, f"{LIST}/{item['id']}").json()
        assert set(detail) == {"id", "name", "born_at", "friends"}
        assert (detail["id"], detail["name"], detail["born_at"]) == (item["id"], item["name"], item["born_at"])
        assert isinstance(detail["friends"], str)
        assert detail == generate_animal(7, item["id"])


def test_unknown_id_answers_a_plain_text_500_every_time(simulator):
    sim = simulator(animals=30)
    for raw in ["30", "31", "abc", "-1", "1.0", "00x"]:
        for _ in range(3):
            response = get(sim, f"{LIST}/{raw}")
            assert response.status_code == 500, raw
            assert response.headers["Content-Type"].startswith("text/plain"), raw
            assert response.text == "Internal Server Error", raw
    assert get(sim, f"{LIST}/29").status_code == 200
    assert get(sim, f"{LIST}/0").status_code == 200


def test_home_accepts_a_batch(simulator):
    sim = simulator(animals=250)
    response = post(sim, records(sim, range(100)))
    assert response.status_code == 200
    assert response.json() == {"message": "Helped 100 find home"}
    report = get(sim, "/_verify").json()
    assert report == sim.verify()
    assert (report["delivered"], report["missing"], report["posts"], report["content_mismatches"]) == (100, 150, 1, 0)


@pytest.mark.parametrize("payload", [{"id": 1}, "x", None], ids=["object", "string", "null"])
def test_home_rejects_a_non_array_with_422(simulator, payload):
    sim = simulator(animals=20)
    response = post(sim, None, data=json.dumps(payload), headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"], error["input"]) == ("list_type", ["body"], payload)
    assert sim.verify()["posts_rejected"] == 1


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"[{", "application/json", ("json_invalid", ["body", 2])),
        (b"\xff\xfe", "application/json", ("json_invalid", ["body", 0])),
        (b"[]", "text/plain", ("list_type", ["body"])),
        (b"[]", "application/x-www-form-urlencoded", ("list_type", ["body"])),
    ],
    ids=["broken-json", "not-utf8", "text-plain", "form"],
)
def test_home_rejects_a_body_not_sent_as_json_with_422(simulator, body, content_type, words):
    sim = simulator(animals=20)
    response = requests.post(sim.url + HOME, data=body, headers={"Content-Type": content_type}, timeout=5)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["type"], error["loc"]) == words and {"msg", "input"} <= set(error)
    assert sim.verify()["posts_rejected"] == 1
    untyped = requests.post(sim.url + HOME, data=b"[]", headers={"Content-Type": None}, timeout=5)
    assert untyped.status_code == 200, "no Content-Type is read as JSON, as FastAPI does"
    ok = requests.post(sim.url + HOME, data=b"[]", headers={"Content-Type": "application/json; charset=utf-8"}, timeout=5)
    assert ok.status_code == 200, "a charset parameter is still JSON"


def test_home_rejects_101_items_with_400_and_delivers_nothing(simulator):
    sim = simulator(animals=250)
    response = post(sim, records(sim, range(101)))
    assert response.status_code == 400 and "100" in response.json()["detail"]
    assert sim.verify()["delivered"] == 0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: r.pop("name"), ("missing", ["name"])),
        (lambda r: r.update(born_at="yesterday"), ("value_error", ["born_at"])),
        (lambda r: r.update(born_at=1444102907778), ("string_type", ["born_at"])),
        (lambda r: r.update(friends="Wildcat,Dog"), ("list_type", ["friends"])),
        (lambda r: r.update(friends=["Dog", 3]), ("string_type", ["friends", 1])),
        (lambda r: r.update(id="5"), ("int_type", ["id"])),
        (lambda r: r.update(id=True), ("int_type", ["id"])),
        (lambda r: r.update(id=-1), ("value_error", ["id"])),
        (lambda r: r.update(id=20), ("value_error", ["id"])),
    ],
    ids=["no-name", "bad-born", "int-born", "friends-str", "friends-int", "id-str", "id-bool", "id-negative", "id-past-end"],
)
def test_malformed_item_is_422_naming_it_and_delivers_nothing(simulator, change, words):
    sim = simulator(animals=20)
    batch = records(sim, range(0, 5))
    change(batch[3])
    response = post(sim, batch)
    assert response.status_code == 422
    kind, where = words
    detail = response.json()["detail"]
    assert [(e["type"], e["loc"][:2 + len(where)]) for e in detail][:1] == [(kind, ["body", 3, *where])], detail
    assert all(set(e) >= {"type", "loc", "msg", "input"} for e in detail)
    report = sim.verify()
    assert (report["delivered"], report["posts"], report["posts_rejected"]) == (0, 0, 1)


# --------------------------------------------------------------------------- data


def test_same_seed_same_animals_other_seed_different():
    assert [generate_animal(3, i) for i in range(50)] == [generate_animal(3, i) for i in range(50)]
    assert [generate_animal(3, i) for i in range(50)] != [generate_animal(4, i) for i in range(50)]
    assert Simulator(SimulatorConfig(seed=3)).total_animals == default_total_animals(3)


def test_same_seed_serves_same_data_over_http(simulator):
    one, two, other = simulator(seed=5), simulator(seed=5), simulator(seed=6)
    assert one.total_animals == two.total_animals
    assert get(one, f"{LIST}?page=7").json() == get(two, f"{LIST}?page=7").json()
    assert get(one, f"{LIST}/42").json() == get(two, f"{LIST}/42").json()
    assert get(one, f"{LIST}?page=7").json()["items"] != get(other, f"{LIST}?page=7").json()["items"]


def test_default_total_is_500_to_600_full_pages():
    totals = {default_total_animals(seed) for seed in range(40)}
    assert all(5_000 <= t <= 6_000 and t % 10 == 0 for t in totals)
    assert len(totals) > 10, "the seed should move the total"
    sim = Simulator(SimulatorConfig(seed=9))
    assert sim.total_pages * 10 == sim.total_animals == default_total_animals(9)


def test_data_distribution_looks_like_upstream():
    animals = [generate_animal(1, i) for i in range(3000)]
    born = [a["born_at"] for a in animals if a["born_at"] is not None]
    assert 0.13 < len(born) / len(animals) < 0.21  # upstream dates about 1 animal in 6
    assert all(isinstance(b, int) and BORN_MIN_MS <= b < BORN_MAX_MS for b in born)
    assert max(born) - min(born) > 30 * 365 * 86_400_000, "birth dates should spread over the range"
    friend_counts = Counter(len(a["friends"].split(",")) if a["friends"] else 0 for a in animals)
    assert set(friend_counts) == {0, 1, 2, 3, 4, 5}
    assert 0.12 < friend_counts[0] / len(animals) < 0.22
    for animal in animals:
        assert animal["name"] in ANIMAL_NAMES
        friends = animal["friends"].split(",") if animal["friends"] else []
        assert len(set(friends)) == len(friends) and set(friends) <= set(ANIMAL_NAMES)
    assert len({a["name"] for a in animals}) > 150


def test_expected_home_record_transforms_the_detail():
    dated = first_id(1, 5000, lambda a: a["born_at"] is not None and a["friends"])
    record = expected_home_record(1, dated)
    raw = generate_animal(1, dated)
    assert record["friends"] == raw["friends"].split(",")
    assert record["born_at"].endswith("+00:00")
    assert round(datetime.fromisoformat(record["born_at"]).timestamp() * 1000) == raw["born_at"]
    undated = first_id(1, 5000, lambda a: a["born_at"] is None and a["friends"] == "")
    assert expected_home_record(1, undated)["born_at"] is None
    assert expected_home_record(1, undated)["friends"] == []


# --------------------------------------------------------------------------- verification


def test_strict_takes_ids_one_at_a_time_and_refuses_at_the_first_repeat_with_a_plain_500(simulator):
    sim = simulator(animals=250, strict=True)
    assert post(sim, records(sim, range(0, 10))).status_code == 200
    again = post(sim, records(sim, [11, 12, 5, 13]))
    assert again.status_code == 500
    assert again.headers["Content-Type"].startswith("text/plain") and again.text == "Internal Server Error"
    twice = post(sim, records(sim, [20, 21, 20, 22]))
    assert twice.status_code == 500 and twice.text == "Internal Server Error"
    first = post(sim, records(sim, [0, 30]))
    assert first.status_code == 500
    report = get(sim, "/_verify").json()
    missing = set(report["missing_ids"])
    assert not missing & {11, 12, 20, 21}, "taken one at a time, before each refusal"
    assert {13, 22, 30} <= missing, "nothing after the refused id is taken"
    assert report["delivered"] == 14
    assert (report["duplicates_rejected"], report["duplicate_ids"]) == (3, [0, 5, 20])
    assert (report["posts"], report["posts_rejected"], report["posts_partly_taken"]) == (1, 3, 2)
    assert report["duplicates_delivered"] == 0 and report["strict"] is True
    assert not exactly_once(report | {"missing": 0})


def test_strict_validates_the_whole_batch_before_taking_any_id(simulator):
    sim = simulator(animals=250, strict=True)
    assert post(sim, records(sim, [5])).status_code == 200
    malformed = records(sim, [1, 2, 5]) + [{"id": 3}]
    assert post(sim, malformed).status_code == 422, "422 for the bad item, not 500 for the repeat before it"
    assert post(sim, records(sim, [1, 2, 5]) + records(sim, range(100, 198))).status_code == 400
    report = sim.verify()
    assert (report["delivered"], report["duplicates_rejected"], report["posts_rejected"]) == (1, 0, 2)


def test_lenient_accepts_a_repeat_and_counts_it(simulator):
    sim = simulator(animals=30)
    assert post(sim, records(sim, range(0, 10))).status_code == 200
    assert post(sim, records(sim, [3, 10, 10])).status_code == 200
    report = sim.verify()
    assert (report["delivered"], report["duplicates_delivered"], report["duplicate_ids"]) == (11, 2, [3, 10])
    assert report["duplicates_rejected"] == 0 and report["strict"] is False
    sim.reset_verification()
    assert sim.verify()["delivered"] == 0


def test_content_mismatches_are_caught_to_the_millisecond(simulator):
    sim = simulator(animals=500, seed=2)
    dated = first_id(2, 500, lambda a: a["born_at"] is not None)
    friendless = first_id(2, 500, lambda a: a["friends"] == "")
    late = sim.expected_record(dated)
    instant = datetime.fromisoformat(late["born_at"]) + timedelta(milliseconds=1)
    late["born_at"] = instant.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    hollow = sim.expected_record(friendless) | {"friends": [""]}
    assert post(sim, [late, hollow]).status_code == 200
    report = sim.verify()
    assert report["content_mismatches"] == 2
    examples = {(e["id"], e["field"]): e for e in report["mismatch_examples"]}
    assert examples[(dated, "born_at")]["got"] == late["born_at"]
    assert examples[(friendless, "friends")] == {"id": friendless, "field": "friends", "expected": [], "got": [""]}


def test_equal_instants_in_other_notations_are_not_mismatches(simulator):
    sim = simulator(animals=500, seed=2)
    dated = first_id(2, 500, lambda a: a["born_at"] is not None)
    instant = datetime.fromisoformat(sim.expected_record(dated)["born_at"])
    as_z = instant.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    in_tokyo = instant.astimezone(timezone(timedelta(hours=9))).isoformat()
    assert post(sim, [sim.expected_record(dated) | {"born_at": as_z}]).status_code == 200
    assert post(sim, [sim.expected_record(dated) | {"born_at": in_tokyo}]).status_code == 200
    assert sim.verify()["content_mismatches"] == 0


def test_null_born_at_must_stay_null(simulator):
    sim = simulator(animals=500, seed=2)
    undated = first_id(2, 500, lambda a: a["born_at"] is None)
    wrong = sim.expected_record(undated) | {"born_at": "1970-01-01T00:00:00Z"}
    assert post(sim, [wrong]).status_code == 200
    assert sim.verify()["mismatch_examples"] == [
        {"id": undated, "field": "born_at", "expected": None, "got": "1970-01-01T00:00:00Z"}
    ]


# --------------------------------------------------------------------------- chaos


@pytest.mark.slow
def test_chaos_rates_at_40_percent(simulator):
    # Stalls far above a normal answer even on a loaded 2-core CI machine (where one can take half a second), so
    # timing tells them apart: a stall is at least 1 s, a normal answer is taken as one under 0.75 s.
    sim = simulator(animals=1000, chaos=40, stall_min=1.0, stall_max=1.1, seed=11)

    def one(batch: range) -> list[tuple[int, float, Any]]:
        out = []
        with requests.Session() as session:
            for animal_id in batch:
                started = time.perf_counter()
                response = session.get(f"{sim.url}{LIST}/{animal_id}", timeout=5)
                out.append((response.status_code, time.perf_counter() - started, response.text))
        return out

    with ThreadPoolExecutor(32) as pool:
        results = [r for part in pool.map(one, [range(k, 1000, 32) for k in range(32)]) for r in part]
    failed = [r for r in results if r[0] != 200]
    stalled = [r for r in results if r[0] == 200 and r[1] > 0.75]
    print(f"{len(failed)} failed, {len(stalled)} stalled of {len(results)}")
    assert 150 <= len(failed) <= 250, len(failed)
    assert 150 <= len(stalled) <= 250, len(stalled)
    assert {status for status, _, _ in failed} == {500, 502, 503, 504}
    phrases = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
    assert all(body == phrases[status] for status, _, body in failed), [r for r in failed if r[2] != phrases[r[0]]][:3]
    assert all(seconds >= 1.0 for _, seconds, _ in stalled)  # never shorter than asked; longer is the machine's load


def test_chaos_spares_root_and_verify(simulator):
    # Any request chaos hits here stalls 30 s (past get()'s 5 s timeout): forty quick answers prove none was hit.
    sim = simulator(animals=10, chaos=100, stall_min=30, stall_max=30)
    started = time.perf_counter()
    assert all(get(sim, path).status_code == 200 for path in ["/", "/_verify"] * 20)
    assert time.perf_counter() - started < 15


def test_a_chaos_failure_is_plain_text_and_delivers_nothing(simulator):
    sim = simulator(animals=20)
    sim.queue_chaos(Chaos.FAIL, Chaos.FAIL)
    port = int(sim.url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    body = json.dumps(records(sim, range(1, 4))).encode()
    connection.request("POST", HOME, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status in (500, 502, 503, 504)
    assert response.getheader("Content-Type").startswith("text/plain")
    assert response.read().decode() == HTTPStatus(response.status).phrase
    assert response.getheader("Connection") is None, "uvicorn drains a body it did not read, and keeps the connection"
    report = sim.verify()
    assert (report["delivered"], report["posts"], report["posts_rejected"]) == (0, 0, 0)
    connection.close()
    connection.request("GET", f"{LIST}/1")
    response = connection.getresponse()
    assert response.status in (500, 502, 503, 504) and response.read()
    assert response.getheader("Connection") is None and not response.will_close


def test_a_stall_does_not_hold_up_other_requests(simulator):
    sim = simulator(animals=20, stall_min=1.2, stall_max=1.2)
    sim.queue_chaos(Chaos.STALL)
    slow: dict[str, Any] = {}

    def stalled_get() -> None:
        started = time.perf_counter()
        slow["status"] = get(sim, f"{LIST}/1").status_code
        slow["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=stalled_get)
    thread.start()
    deadline = time.perf_counter() + 2
    while sim.stalled_requests == 0 and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert sim.stalled_requests == 1
    started = time.perf_counter()
    assert get(sim, f"{LIST}/2").status_code == 200
    assert time.perf_counter() - started < 1
    assert sim.stalled_requests == 1, "the first request should still be stalled"
    thread.join(5)
    assert slow["status"] == 200 and slow["seconds"] >= 1.2


def test_a_stalled_post_is_delivered_after_its_client_gave_up(simulator):
    sim = simulator(animals=20, stall_min=0.3, stall_max=0.3)
    sim.queue_chaos(Chaos.STALL)
    with pytest.raises(requests.ReadTimeout):
        post(sim, records(sim, [7]), timeout=(1, 0.05))
    assert sim.verify()["delivered"] == 0, "delivered before the stall ended"
    deadline = time.perf_counter() + 3
    while sim.verify()["delivered"] == 0 and time.perf_counter() < deadline:
        time.sleep(0.02)
    report = sim.verify()
    assert (report["delivered"], report["posts"], report["missing"]) == (1, 1, 19)


# --------------------------------------------------------------------------- HTTP/1.1 like the real server


def expect_continue(sim: Simulator, body: bytes) -> http.client.HTTPConnection:
    """Send a POST's headers with `Expect: 100-continue` and hold the body back, as a careful client does."""
    connection = http.client.HTTPConnection("127.0.0.1", int(sim.url.rsplit(":", 1)[1]), timeout=5)
    connection.putrequest("POST", HOME)
    for name, value in [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                        ("Expect", "100-continue")]:
        connection.putheader(name, value)
    connection.endheaders()
    return connection


def received_within(connection: http.client.HTTPConnection, seconds: float) -> bytes | None:
    """What the server sends in the next `seconds`, read off the raw socket: None if nothing, b"" if it closed."""
    connection.sock.settimeout(seconds)
    try:
        return connection.sock.recv(65536)
    except TimeoutError:
        return None
    finally:
        connection.sock.settimeout(5)


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def test_expect_100_continue_is_answered_when_the_body_is_wanted(simulator):
    sim = simulator(animals=20)
    body = json.dumps(records(sim, [0])).encode()
    connection = expect_continue(sim, body)
    assert received_within(connection, 2) == CONTINUE
    connection.send(body)
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read()) == {"message": "Helped 1 find home"}
    assert sim.verify()["delivered"] == 1
    plain = http.client.HTTPConnection("127.0.0.1", int(sim.url.rsplit(":", 1)[1]), timeout=5)
    plain.request("POST", HOME, body=json.dumps(records(sim, [1])), headers={"Content-Type": "application/json"})
    plain.sock.settimeout(2)
    assert plain.sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n"), "without Expect: no interim answer, as before"


def test_expect_100_continue_comes_only_after_a_stall(simulator):
    sim = simulator(animals=20, stall_min=1.5, stall_max=1.5)
    sim.queue_chaos(Chaos.STALL, method="POST")
    body = json.dumps(records(sim, [0])).encode()
    started = time.perf_counter()
    connection = expect_continue(sim, body)
    assert received_within(connection, 1.0) is None, "no 100 Continue while the request is stalled"
    assert received_within(connection, 3) == CONTINUE
    assert time.perf_counter() - started >= 1.5
    connection.send(body)
    assert connection.getresponse().status == 200
    assert sim.verify()["delivered"] == 1


def test_expect_100_continue_never_comes_before_a_chaos_failure(simulator):
    sim = simulator(animals=20)
    sim.queue_chaos(Chaos.FAIL, method="POST")
    connection = expect_continue(sim, json.dumps(records(sim, [0])).encode())
    answer = b""
    while chunk := received_within(connection, 2):  # until the server closes the connection
        answer += chunk
    assert re.match(rb"HTTP/1.1 50[0234] ", answer), answer
    assert b"100 Continue" not in answer
    assert answer.split(b"\r\n\r\n", 1)[1] in {b"Internal Server Error", b"Bad Gateway", b"Service Unavailable",
                                                  b"Gateway Timeout"}
    assert sim.verify()["delivered"] == 0 and sim.verify()["posts_rejected"] == 0


def test_an_idle_keep_alive_connection_is_closed_but_a_stall_or_slow_body_is_not(simulator):
    sim = simulator(animals=20, idle_timeout=0.3, stall_min=0.8, stall_max=0.8)
    connection = http.client.HTTPConnection("127.0.0.1", int(sim.url.rsplit(":", 1)[1]), timeout=5)
    connection.request("GET", "/")
    assert connection.getresponse().read() == b'"Hello!"'
    first = connection.sock
    time.sleep(0.1)
    connection.request("GET", "/")  # well within the idle timeout: the same connection
    assert connection.getresponse().read() == b'"Hello!"' and connection.sock is first
    assert received_within(connection, 1.5) == b"", "closed (EOF) after idling about 0.3 s"
    connection.close()

    sim.queue_chaos(Chaos.STALL)
    connection.request("GET", f"{LIST}/0")  # stalled 0.8 s, longer than the idle timeout
    stalled = connection.getresponse()
    assert stalled.status == 200 and stalled.read()
    body = json.dumps(records(sim, [0, 1])).encode()
    connection.putrequest("POST", HOME)
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders()
    connection.send(body[:10])
    time.sleep(0.8)  # a slow body, pausing longer than the idle timeout
    connection.send(body[10:])
    assert connection.getresponse().status == 200
    assert sim.verify()["delivered"] == 2


def test_a_restart_with_another_seed_brings_another_data_set_under_the_same_ids(simulator):
    before = simulator(seed=1)
    port = int(before.url.rsplit(":", 1)[1])
    first_page = get(before, f"{LIST}?page=1").json()
    animal_0 = get(before, f"{LIST}/0").json()
    before.stop()
    other = next(seed for seed in range(2, 50) if default_total_animals(seed) != default_total_animals(1))
    after = simulator(seed=other, port=port)  # the same address, restarted
    page = get(after, f"{LIST}?page=1").json()
    assert page["total_pages"] != first_page["total_pages"]
    assert [item["id"] for item in page["items"]] == [item["id"] for item in first_page["items"]] == list(range(10))
    assert page["items"] != first_page["items"]
    assert get(after, f"{LIST}/0").json() != animal_0 and get(after, f"{LIST}/0").json()["id"] == 0


# --------------------------------------------------------------------------- lifecycle


def test_busy_port_is_one_readable_line(simulator):
    port = int(simulator(animals=10).url.rsplit(":", 1)[1])
    with pytest.raises(SimulatorError) as caught:
        Simulator(SimulatorConfig(port=port, animals=10)).start()
    assert str(caught.value) == f"port {port} on 127.0.0.1 is already in use"
    with pytest.raises(SimulatorError, match="already in use"):
        serve(SimulatorConfig(port=port, animals=10))


def test_stop_is_idempotent_and_frees_the_port():
    sim = Simulator(SimulatorConfig(port=0, animals=10, chaos=0)).start()
    url = sim.url
    assert requests.get(url + "/", timeout=5).status_code == 200
    sim.stop()
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/", timeout=2)
    port = int(url.rsplit(":", 1)[1])
    with Simulator(SimulatorConfig(port=port, animals=10, chaos=0)) as again:
        assert requests.get(again.url + "/", timeout=5).json() == "Hello!"


def as_from_a_terminal() -> None:
    """In the child before it starts: Ctrl-C as a terminal delivers it. A suite started in the background by a
    non-interactive shell (`make test &`, nohup) ignores SIGINT, its children inherit that, and Python then leaves
    it ignored: `serve` would rightly never hear the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_serve_prints_one_line_and_stops_cleanly_on_ctrl_c():
    code = "from animal_sync.simulator import SimulatorConfig, serve; serve(SimulatorConfig(port=0, animals=30, chaos=0))"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal
    )
    try:
        line = child.stdout.readline().rstrip("\n")
        match = re.fullmatch(r"Animals API simulator on (http://127\.0\.0\.1:\d+): 30 animals, chaos 0%, strict off", line)
        assert match, line
        assert requests.get(match.group(1) + "/", timeout=5).json() == "Hello!"
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=10)
    finally:
        child.kill()
    assert child.returncode == 0 and err == ""


def test_serve_stops_on_a_ctrl_c_the_kernel_hands_to_another_thread():
    """A SIGINT to the process may land on any thread that does not block it; Python then only sets a flag for the
    main thread. serve() used to wait on an Event for ever and never saw it (make test: a 10 s timeout, now and then).
    Here a thread of the child sends the signal to itself: the main thread must still stop the server at once."""
    code = (
        "import signal, sys, threading\n"
        "from animal_sync.simulator import SimulatorConfig, serve\n"
        "banner = threading.Event()\n"
        "class Out:\n"
        "    def write(self, text): sys.__stdout__.write(text); banner.set()\n"
        "    def flush(self): sys.__stdout__.flush()\n"
        "sys.stdout = Out()\n"
        "threading.Thread(target=lambda: banner.wait() and signal.pthread_kill(threading.get_ident(), signal.SIGINT)).start()\n"
        "serve(SimulatorConfig(port=0, animals=10, chaos=0))\n"
        "print('stopped')\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_from_a_terminal
    )
    try:
        out, err = child.communicate(timeout=20)
    finally:
        child.kill()
    assert child.returncode == 0 and err == "" and out.endswith("stopped\n"), (out, err)


def test_serve_writes_its_url_to_the_parents_pipe_not_only_to_the_banner():
    read_fd, write_fd = os.pipe()
    code = f"from animal_sync.simulator import SimulatorConfig, serve; serve(SimulatorConfig(port=0, animals=10, chaos=0), url_fd={write_fd})"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, pass_fds=(write_fd,))
    os.close(write_fd)
    try:
        with open(read_fd, encoding="ascii") as pipe:
            assert select.select([pipe], [], [], 15)[0], "the child wrote no URL to its pipe"
            url = pipe.read()  # the child closes the pipe once written: EOF, with no banner in sight
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+\n", url), url
        assert requests.get(url.strip() + "/", timeout=5).json() == "Hello!"
    finally:
        child.kill()
        child.wait()


def test_a_simulator_process_serves_on_a_free_port_and_stops_on_exit():
    with SimulatorProcess("--chaos", "0", "--animals", "20", "--strict") as simulator:
        assert requests.get(simulator.url + "/animals/v1/animals?page=2", timeout=5).json()["items"][0]["id"] == 10
        verdict = simulator.verify()
        assert verdict["animals"] == 20 and verdict["strict"] is True
    assert simulator.process is not None and simulator.process.poll() is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(simulator.url + "/", timeout=2)


def test_a_simulator_process_that_cannot_start_says_why_in_one_line():
    with pytest.raises(SimulatorError, match=r"^the simulator exited at start with code 2$"):
        with SimulatorProcess("--animals", "33"):
            pass


def test_bad_config_is_refused_in_one_line():
    with pytest.raises(SimulatorError, match="unknown fault 'gremlins'"):
        Simulator(SimulatorConfig(animals=10, faults={3: "gremlins"}))
    with pytest.raises(SimulatorError, match="ids run 0..9"):
        Simulator(SimulatorConfig(animals=10, faults={10: "html"}))
    with pytest.raises(SimulatorError, match="stall"):
        Simulator(SimulatorConfig(stall_min=3, stall_max=1))


# --------------------------------------------------------------------------- hostile data (faults)

FAULTS = {
    3: "bad_born_at", 4: "friends_type", 5: "missing_name", 6: "wrong_id", 7: "html", 8: "truncated",
    9: "extra_fields", 10: "unicode_name", 11: "long_name", 12: "huge_body", 13: "duplicate_listing",
    24: "total_pages_change",
}
UNDELIVERABLE = [3, 4, 5, 6, 7, 8, 12]


@pytest.fixture
def hostile(simulator):
    return simulator(animals=50, seed=4, faults=FAULTS)


def detail(sim: Simulator, animal_id: int) -> requests.Response:
    return get(sim, f"{LIST}/{animal_id}")


@pytest.mark.parametrize(
    ("animal_id", "field", "value"),
    [(3, "born_at", "yesterday"), (4, "friends", 42), (6, "id", 1_000_006), (10, "name", "Ñandú 🐦 Straße")],
)
def test_fault_replaces_one_field(hostile, animal_id, field, value):
    body = detail(hostile, animal_id).json()
    clean = generate_animal(4, animal_id)
    assert body == clean | {field: value}


def test_fault_missing_name_drops_the_key(hostile):
    body = detail(hostile, 5).json()
    assert "name" not in body and body["id"] == 5 and set(body) == {"id", "born_at", "friends"}


def test_fault_html_is_a_200_web_page(hostile):
    response = detail(hostile, 7)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text == "<html>oops</html>"


def test_fault_truncated_is_half_a_json_document(hostile):
    response = detail(hostile, 8)
    full = json.dumps(generate_animal(4, 8), ensure_ascii=False, separators=(",", ":")).encode()
    assert response.status_code == 200 and response.content == full[: len(full) // 2]
    with pytest.raises(ValueError):
        response.json()


def test_fault_extra_fields_is_still_a_valid_animal(hostile):
    assert detail(hostile, 9).json() == generate_animal(4, 9) | {"colour": "red", "legs": 4}
    assert hostile.expected_record(9) == expected_home_record(4, 9)


def test_fault_long_name_is_5000_characters(hostile):
    name = detail(hostile, 11).json()["name"]
    assert len(name) == 5000 and name.startswith(generate_animal(4, 11)["name"])
    assert hostile.expected_record(11)["name"] == name == expected_home_record(4, 11, FAULTS)["name"]
    listed = get(hostile, f"{LIST}?page=2").json()["items"]
    assert listed[1] == {"id": 11, "name": generate_animal(4, 11)["name"], "born_at": generate_animal(4, 11)["born_at"]}


def test_fault_huge_body_streams_20_mb_of_valid_json(hostile):
    with requests.get(f"{hostile.url}{LIST}/12", stream=True, timeout=10) as response:
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == 20 * 1024 * 1024
        body = b"".join(response.iter_content(1 << 20))
    assert len(body) == 20 * 1024 * 1024
    animal = json.loads(body)
    assert {k: animal[k] for k in ("id", "name", "born_at", "friends")} == generate_animal(4, 12)
    assert detail(hostile, 1).status_code == 200, "the connection pool and server survive it"


def test_fault_duplicate_listing_repeats_the_id_on_the_next_page(hostile):
    ids = {n: [item["id"] for item in get(hostile, f"{LIST}?page={n}").json()["items"]] for n in (2, 3)}
    assert ids[2] == list(range(10, 20)), "its own page is unchanged"
    assert ids[3] == [13] + list(range(20, 30)), "and it shows up again, as an 11th item, on the next"

    assert detail(hostile, 13).json() == generate_animal(4, 13)


def test_fault_total_pages_change_grows_only_its_page(hostile):
    pages = {n: get(hostile, f"{LIST}?page={n}").json() for n in range(1, 7)}
    assert [pages[n]["total_pages"] for n in range(1, 7)] == [5, 5, 6, 5, 5, 5]
    assert pages[6]["items"] == [] and [i["id"] for i in pages[5]["items"]] == list(range(40, 50))


def test_faults_are_never_in_the_list_items(hostile):
    items = [i for n in range(1, 6) for i in get(hostile, f"{LIST}?page={n}").json()["items"]]
    assert all(item == {"id": item["id"], "name": generate_animal(4, item["id"])["name"],
                        "born_at": generate_animal(4, item["id"])["born_at"]} for item in items)


def test_verify_excludes_undeliverable_faults_from_missing(hostile):
    report = hostile.verify()
    assert report["faulted_ids"] == UNDELIVERABLE
    assert report["missing"] == 50 - len(UNDELIVERABLE)
    assert report["missing_ids"] == [i for i in range(50) if i not in UNDELIVERABLE]
    good = [i for i in range(50) if i not in UNDELIVERABLE]
    for start in range(0, len(good), 20):
        assert post(hostile, records(hostile, good[start:start + 20])).status_code == 200
    report = hostile.verify()
    assert (report["missing"], report["missing_ids"], report["content_mismatches"]) == (0, [], 0)
    assert report["delivered"] == len(good) and report["faulted_delivered"] == []


def test_verify_flags_delivered_faulted_ids_and_clean_names_for_renamed_animals(hostile):
    plain_name = expected_home_record(4, 10)  # the list's name, not the detail's unicode one
    assert post(hostile, [expected_home_record(4, 3), plain_name]).status_code == 200
    report = hostile.verify()
    assert report["faulted_delivered"] == [3]
    assert report["content_mismatches"] == 1
    assert report["mismatch_examples"][0]["field"] == "name" and report["mismatch_examples"][0]["id"] == 10
    assert report["missing"] == 50 - len(UNDELIVERABLE) - 1


@pytest.mark.parametrize(
    ("change", "clean"),
    [({}, True), ({"missing": 1}, False), ({"duplicates_rejected": 3}, False), ({"content_mismatches": 1}, False)],
)
def test_exactly_once_reads_a_verdict(simulator, change, clean):
    verdict = simulator(animals=0).verify() | change
    assert exactly_once(verdict) is clean
    assert not exactly_once({}) and not exactly_once({"missing": 0})  # no answer, or half of one, is not clean


def test_dropped_queued_chaos_no_longer_falls_on_later_requests(simulator):
    sim = simulator(animals=20)
    sim.queue_chaos(Chaos.FAIL, Chaos.FAIL)
    sim.queue_chaos(Chaos.FAIL, method="GET")
    sim.queue_chaos(Chaos.FAIL, method="POST")
    assert get(sim, f"{LIST}/1").status_code in (500, 502, 503, 504), "a queued fate falls on the next request"

    assert sim.drop_queued_chaos() == 3
    assert [get(sim, f"{LIST}/1").status_code for _ in range(5)] == [200] * 5
    posted = requests.post(sim.url + HOME, json=records(sim, [0]), timeout=5)
    assert posted.status_code == 200 and sim.verify()["delivered"] == 1
    assert sim.drop_queued_chaos() == 0


# --------------------------------------------------------------------------- revised records (between two syncs)


def test_revised_animals_change_name_only_and_the_rest_stay_the_same(simulator):
    before = simulator(animals=40, seed=4)
    after = simulator(animals=40, seed=4, revised=frozenset({3, 27}))
    assert after.total_pages == before.total_pages
    for animal_id in range(40):
        old, new = get(before, f"{LIST}/{animal_id}").json(), get(after, f"{LIST}/{animal_id}").json()
        if animal_id in (3, 27):
            assert new["name"] != old["name"] and {**new, "name": old["name"]} == old
        else:
            assert new == old
        assert after.expected_record(animal_id)["name"] == new["name"]
    items = {item["id"]: item for item in get(after, f"{LIST}?page=1").json()["items"]}
    assert items[3]["name"] == get(after, f"{LIST}/3").json()["name"]  # the listing agrees with the detail
    assert expected_home_record(4, 27, revised=frozenset({27})) == after.expected_record(27) != before.expected_record(27)


def test_a_revised_id_outside_the_run_is_refused():
    with pytest.raises(SimulatorError, match="revise names id 10, but ids run 0..9"):
        Simulator(SimulatorConfig(animals=10, revised=frozenset({10})))


def test_simulate_revise_serves_the_changed_animal():
    with SimulatorProcess("--chaos", "0", "--animals", "20", "--seed", "4", "--revise", "3") as changed:
        name = requests.get(changed.url + f"{LIST}/3", timeout=5).json()["name"]
    assert name == expected_home_record(4, 3, revised=frozenset({3}))["name"] != generate_animal(4, 3)["name"]
