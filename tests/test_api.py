"""Tests for animal_sync.client.api: retry policies as values, outcomes under `responses`, and a real local socket server.

What `responses` can and cannot show (responses 0.26, urllib3 2.x): it replaces `HTTPAdapter.send`, so urllib3's
connection pool never runs. It does re-implement the *status* half of the adapter's `max_retries` (a forcelisted
5xx on an allowed method is re-sent, Retry-After is honoured by `is_retry`), so call counts are meaningful. It
does not sleep, cannot produce read timeouts or refused connections, and its responses carry no `Retry.history`,
so `Page/Detail/PostResult.retries` stay empty under it. Those cases run against the real server below.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from contextlib import closing
from dataclasses import dataclass
from typing import Any
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import responses
from responses import matchers
from continue_server import ContinueServer, Fate
from urllib3 import HTTPResponse
from urllib3.exceptions import MaxRetryError, NewConnectionError, ReadTimeoutError

from animal_sync.client.api import (
    HOME_PATH,
    LIST_PATH,
    AnimalsApi,
    ApiUnreachable,
    FetchFailed,
)
from animal_sync.config import Settings
from animal_sync.client.continue100 import BodyRelease, BodyWithheld, ContinueRetry
from animal_sync.client.latency import MIN_SAMPLES
from animal_sync.client.outcomes import PostOutcome, classify_answer
from animal_sync.client.retry import get_retry, post_retry

BASE = "http://api.test"
LIST_URL = BASE + LIST_PATH
HOME_URL = BASE + HOME_PATH
RECORDS = [{"id": 1, "name": "Cobra", "born_at": None, "friends": []}]


def listing(ids, total_pages=3):
    return {"page": 1, "total_pages": total_pages, "items": [{"id": i, "name": f"a{i}"} for i in ids]}


@pytest.fixture
def api():
    api = AnimalsApi(Settings(base_url=BASE, retries=3, backoff=0, max_body_bytes=1024))
    yield api
    api.close()


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


# --- the policies as values ---------------------------------------------------------------


def test_get_retry_retries_gets_on_5xx_connect_and_read():
    retry = get_retry(4, 0.5)
    assert retry.allowed_methods == {"GET"}
    assert set(retry.status_forcelist) == {500, 502, 503, 504}
    assert (retry.total, retry.connect, retry.read, retry.status) == (4, 4, 4, 4)
    assert retry.backoff_factor == 0.5 and retry.backoff_max == 2.0
    assert retry.respect_retry_after_header and retry.raise_on_status is False
    assert retry.is_retry("GET", 503)
    assert not retry.is_retry("POST", 503)
    assert not retry.is_retry("GET", 404) and not retry.is_retry("GET", 501)
    assert retry.is_retry("GET", 429, has_retry_after=True)  # Retry-After is honoured
    after_read_timeout = retry.increment("GET", "/x", error=ReadTimeoutError(None, "/x", "timed out"))
    assert after_read_timeout.read == 3


def test_post_retry_never_retries_a_read_and_retries_connect_and_5xx():
    retry = post_retry(4, 0.5)
    assert retry.allowed_methods == {"POST"}
    assert set(retry.status_forcelist) == {500, 502, 503, 504}
    assert (retry.total, retry.connect, retry.read, retry.status) == (4, 4, 0, 4)
    assert retry.respect_retry_after_header and retry.raise_on_status is False
    assert retry.is_retry("POST", 502)
    assert not retry.is_retry("GET", 502)
    assert not retry.is_retry("POST", 422) and not retry.is_retry("POST", 400)
    with pytest.raises(MaxRetryError) as exc_info:
        retry.increment("POST", "/home", error=ReadTimeoutError(None, "/home", "timed out"))
    assert isinstance(exc_info.value.reason, ReadTimeoutError)
    refused = NewConnectionError(None, "refused")  # type: ignore[arg-type]
    assert retry.increment("POST", "/home", error=refused).connect == 3


def test_posts_to_home_get_the_post_policy_and_everything_else_the_get_policy(api):
    assert api.session.get_adapter(HOME_URL).max_retries.allowed_methods == {"POST"}
    assert api.session.get_adapter(HOME_URL).max_retries.read == 0
    assert api.session.get_adapter(LIST_URL + "?page=2").max_retries.allowed_methods == {"GET"}
    assert api.session.get_adapter(LIST_URL + "/7").max_retries.read == 3


# --- GET under responses ------------------------------------------------------------------


def test_list_page_parses_a_listing(api, mocked):
    mocked.get(LIST_URL, json=listing([3, 1, 2], total_pages=9), match=[matchers.query_param_matcher({"page": "2"})])
    page = api.list_page(2)
    assert (page.page, page.total_pages, page.ids, page.retries) == (2, 9, (3, 1, 2), ())
    assert mocked.calls[0].request.headers["Accept"] == "application/json"


def test_a_503_then_200_returns_the_200(api, mocked):
    mocked.get(LIST_URL + "/7", status=503)
    mocked.get(LIST_URL + "/7", body=b'{"id": 7}')
    assert api.fetch_detail(7).body == b'{"id": 7}'
    assert len(mocked.calls) == 2


def test_a_detail_answering_500_every_time_fails_after_the_budget(api, mocked):
    mocked.get(LIST_URL + "/7", status=500, body="down")
    with pytest.raises(FetchFailed) as exc_info:
        api.fetch_detail(7)
    assert not isinstance(exc_info.value, ApiUnreachable)
    assert "HTTP 500" in str(exc_info.value) and "down" in str(exc_info.value)
    assert len(mocked.calls) == 1 + 3


def test_a_404_detail_fails_at_once(api, mocked):
    mocked.get(LIST_URL + "/7", status=404, body="no such animal")
    with pytest.raises(FetchFailed, match="HTTP 404.*no such animal"):
        api.fetch_detail(7)
    assert len(mocked.calls) == 1


def test_a_detail_body_is_kept_byte_for_byte(api, mocked):
    body = b'{"id": 7, "name": "\xc3\xa9l\xff"}'
    mocked.get(LIST_URL + "/7", body=body)
    assert api.fetch_detail(7).body == body


@pytest.mark.parametrize(
    "body",
    [
        b"<html>maintenance</html>",
        b"",
        b"[1, 2]",
        b'"items"',
        b'{"items": [{"id": 1}]}',
        b'{"total_pages": 3}',
        b'{"items": [], "total_pages": null}',
        b'{"items": [], "total_pages": 2.5}',
        b'{"items": [], "total_pages": true}',
        b'{"items": {"id": 1}, "total_pages": 3}',
        b"\xff\xfe",
    ],
)
def test_list_page_that_is_not_a_listing_fails(api, mocked, body):
    mocked.get(LIST_URL, body=body)
    with pytest.raises(FetchFailed) as exc_info:
        api.list_page(1)
    message = str(exc_info.value)
    assert message.startswith("page 1: not a listing") and "\n" not in message
    assert len(mocked.calls) == 1


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"id": 3.7}, "id 3.7 is float, not an integer"),
        ({"id": 3.0}, "id 3.0 is float, not an integer"),
        ({"id": 10**20}, "id 100000000000000000000 is outside 0 .. 2**63-1"),
        ({"id": -1}, "id -1 is outside 0 .. 2**63-1"),
        ({"id": True}, "id True is bool, not an integer"),
        ({"id": "7"}, "id '7' is str, not an integer"),
        ({"name": "no id"}, "item has no id"),
        (None, "item is NoneType, not an object"),
    ],
)
def test_a_listing_item_without_a_journalable_id_is_set_aside_never_coerced(api, mocked, item, reason):
    mocked.get(LIST_URL, json={"page": 1, "total_pages": 3, "items": [{"id": 0}, item, {"id": 2**63 - 1}]})
    page = api.list_page(1)
    assert page.ids == (0, 2**63 - 1)
    assert page.bad_items == ({"item": json.dumps(item), "reason": reason},)


def test_a_page_digest_names_its_animals_not_only_its_ids(api, mocked):
    def items(name):
        return {"page": 1, "total_pages": 3, "items": [{"id": 0, "name": name, "born_at": None}]}

    mocked.get(LIST_URL, json=items("Cobra"))
    mocked.get(LIST_URL, json=items("Cobra"))
    mocked.get(LIST_URL, json=items("Dog"))
    first, again, other = (api.list_page(1) for _ in range(3))
    assert first.digest == again.digest != other.digest and first.ids == other.ids


def test_list_page_not_200_fails(api, mocked):
    mocked.get(LIST_URL, status=404)
    with pytest.raises(FetchFailed, match="page 1: HTTP 404"):
        api.list_page(1)


def test_a_detail_over_the_limit_by_content_length_is_refused_unread(api, mocked):
    mocked.get(LIST_URL + "/7", body=b"x" * 2000, auto_calculate_content_length=True)
    with pytest.raises(FetchFailed, match="body of 2000 bytes is over the 1024-byte limit"):
        api.fetch_detail(7)


def test_a_detail_over_the_limit_without_content_length_is_refused(api, mocked):
    mocked.get(LIST_URL + "/7", body=b"x" * 2000)
    with pytest.raises(FetchFailed) as exc_info:
        api.fetch_detail(7)
    assert str(exc_info.value) == "body is over the 1024-byte limit"
    assert "Content-Length" not in mocked.calls[0].response.headers


@pytest.mark.parametrize("auto_length", [True, False])
def test_a_detail_exactly_at_the_limit_is_accepted(api, mocked, auto_length):
    mocked.get(LIST_URL + "/7", body=b"x" * 1024, auto_calculate_content_length=auto_length)
    assert len(api.fetch_detail(7).body) == 1024


# --- POST under responses -----------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204])
def test_a_2xx_post_is_delivered(api, mocked, status):
    mocked.post(HOME_URL, status=status, body="" if status == 204 else '{"ok": true}', match=[matchers.json_params_matcher(RECORDS)])
    result = api.post_batch(RECORDS)
    assert (result.outcome, result.status, result.error) == (PostOutcome.DELIVERED, status, None)
    assert len(mocked.calls) == 1


def test_a_502_then_200_post_is_delivered_after_one_resend(api, mocked):
    mocked.post(HOME_URL, status=502)
    mocked.post(HOME_URL, status=200, body="ok")
    result = api.post_batch(RECORDS)
    assert (result.outcome, result.status, result.body) == (PostOutcome.DELIVERED, 200, "ok")
    assert len(mocked.calls) == 2
    assert mocked.calls[0].request.body == mocked.calls[1].request.body


def test_a_422_is_refused_with_its_body_and_never_resent(api, mocked):
    mocked.post(HOME_URL, status=422, json={"error": "born_at is not a date"})
    result = api.post_batch(RECORDS)
    assert (result.outcome, result.status) == (PostOutcome.REFUSED_AFTER_READING, 422)
    assert json.loads(result.body) == {"error": "born_at is not a date"}
    assert result.error.startswith("HTTP 422: ") and "born_at is not a date" in result.error
    assert len(mocked.calls) == 1


def test_a_400_is_refused(api, mocked):
    mocked.post(HOME_URL, status=400, body="too many")
    result = api.post_batch(RECORDS)
    assert (result.outcome, result.status, result.body) == (PostOutcome.REFUSED_AFTER_READING, 400, "too many")
    assert len(mocked.calls) == 1


def test_a_post_answering_500_every_time_is_refused_after_the_budget(api, mocked):
    mocked.post(HOME_URL, status=500, body="down")
    result = api.post_batch(RECORDS)
    assert (result.outcome, result.status, result.body) == (PostOutcome.REFUSED_BEFORE_READING, 500, "down")
    assert len(mocked.calls) == 1 + 3


def test_a_refused_body_is_kept_up_to_2000_characters(api, mocked):
    mocked.post(HOME_URL, status=422, body="e" * 5000)
    result = api.post_batch(RECORDS)
    assert len(result.body) == 2000 and len(result.error) == len("HTTP 422: ") + 300


# --- authorization and redaction ----------------------------------------------------------


def test_a_token_is_sent_as_a_bearer_header_on_gets_and_posts(mocked):
    bearer = matchers.header_matcher({"Authorization": "Bearer s3cret"})
    mocked.get(LIST_URL + "/7", body=b"{}", match=[bearer])
    mocked.post(HOME_URL, status=201, match=[bearer])
    api = AnimalsApi(Settings(base_url=BASE, token="s3cret", retries=0))
    try:
        api.fetch_detail(7)
        assert api.post_batch(RECORDS).outcome == PostOutcome.DELIVERED
    finally:
        api.close()


def test_without_a_token_no_authorization_is_sent(api, mocked):
    mocked.get(LIST_URL + "/7", body=b"{}")
    api.fetch_detail(7)
    assert "Authorization" not in mocked.calls[0].request.headers


# --- a real local server: what only sockets can show --------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"{}"
    stall: float = 0.0  # seconds to wait before answering, as the API does
    drop: bool = False  # read the request, then close the connection without a word
    cut: bool = False  # promise the whole body in Content-Length, send half, hang up


class Upstream(ThreadingHTTPServer):
    """A tiny HTTP/1.0 server on 127.0.0.1 that answers from a script and counts what it saw."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: deque[Answer] = deque()
        self.seen: list[tuple[str, str]] = []
        self.authorization: list[str | None] = []
        self.released = threading.Event()  # ends every stall at teardown

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, *answers: Answer) -> None:
        self.script.extend(answers)


class _Handler(BaseHTTPRequestHandler):
    server: Upstream

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path))
        self.server.authorization.append(self.headers.get("Authorization"))
        answer = self.server.script.popleft() if self.server.script else Answer()
        if answer.stall:
            self.server.released.wait(answer.stall)
        if answer.drop:
            self.close_connection = True
            return
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if answer.cut:  # promise the whole body, send half of it, hang up
                self.wfile.write(answer.body[: len(answer.body) // 2])
                self.close_connection = True
                return
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on a stall: that is the point

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream(monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.released.set()
    server.shutdown()
    server.server_close()


def real_api(url: str, **overrides) -> AnimalsApi:
    settings = dict(base_url=url, retries=3, backoff=0, connect_timeout=1.0, get_timeout=0.2, post_timeout=0.2)
    return AnimalsApi(Settings(**{**settings, **overrides}))


@pytest.fixture
def live(upstream):
    api = real_api(upstream.url)
    yield api
    api.close()


def test_a_real_503_then_200_get_counts_the_retry(upstream, live):
    upstream.answer(Answer(503), Answer(200, json.dumps(listing([4, 5])).encode()))
    page = live.list_page(1)
    assert page.ids == (4, 5)
    assert page.retries == ("http_503",)
    assert upstream.seen == [("GET", LIST_PATH + "?page=1")] * 2


def test_a_real_detail_failing_every_time_names_the_budget(upstream, live):
    upstream.answer(*[Answer(502, b"bad gateway")] * 4)
    with pytest.raises(FetchFailed, match="HTTP 502 after 3 retries: bad gateway"):
        live.fetch_detail(7)
    assert len(upstream.seen) == 4


def test_a_real_502_then_200_post_counts_the_retry(upstream, live):
    upstream.answer(Answer(502), Answer(201, b'{"ok": true}'))
    result = live.post_batch(RECORDS)
    assert (result.outcome, result.status, result.retries) == (PostOutcome.DELIVERED, 201, ("http_502",))
    assert upstream.seen == [("POST", HOME_PATH)] * 2


def test_a_stalled_post_is_unknown_and_never_resent(upstream, live):
    upstream.answer(Answer(201, stall=2.0))
    result = live.post_batch(RECORDS)
    assert result.outcome == PostOutcome.UNKNOWN
    assert (result.status, result.body) == (None, None)
    assert result.error.startswith("read_timeout")
    assert upstream.seen == [("POST", HOME_PATH)]


def test_a_dropped_post_is_unknown_and_never_resent(upstream, live):
    upstream.answer(Answer(drop=True))
    result = live.post_batch(RECORDS)
    assert result.outcome == PostOutcome.UNKNOWN
    assert result.error.startswith("connection_dropped")
    assert upstream.seen == [("POST", HOME_PATH)]


def test_a_post_that_waits_out_a_short_stall_is_delivered(upstream):
    upstream.answer(Answer(201, b"ok", stall=0.3))
    api = real_api(upstream.url, post_timeout=2.0)
    try:
        result = api.post_batch(RECORDS)
    finally:
        api.close()
    assert (result.outcome, result.body) == (PostOutcome.DELIVERED, "ok")
    assert len(upstream.seen) == 1


def test_a_get_that_stalls_once_is_resent_and_answers(upstream, live):
    upstream.answer(Answer(200, b"late", stall=2.0), Answer(200, b'{"id": 7}'))
    detail = live.fetch_detail(7)
    assert detail.body == b'{"id": 7}'
    assert detail.retries == ("read_timeout",)
    assert upstream.seen == [("GET", LIST_PATH + "/7")] * 2


def test_after_enough_fast_answers_a_stalled_get_is_cut_at_the_adapted_timeout_not_the_ceiling(upstream):
    # A ceiling (3 s) above the stall (2 s): only the adapted cut can re-send the GET before the stall ends.
    api = real_api(upstream.url, get_timeout=3.0, get_timeout_floor=0.3)
    try:
        for animal_id in range(MIN_SAMPLES):
            api.fetch_detail(animal_id)  # the server's default answer, at once
        assert api.get_cut.seconds == 0.3
        upstream.answer(Answer(200, b"late", stall=2.0), Answer(200, b'{"id": 7}'))
        detail = api.fetch_detail(7)
    finally:
        api.close()
    # Waiting up to the ceiling would have got the stalled try's "late" answer: the second answer, after a read
    # timeout, proves the try was cut below the stall, without timing anything on a loaded machine.
    assert detail.body == b'{"id": 7}' and detail.retries == ("read_timeout",)
    assert api.get_cut.seconds == 0.3  # the cut try was no answer: it did not raise the cut


def test_a_get_that_stalls_every_time_fails_but_is_not_unreachable(upstream):
    upstream.answer(*[Answer(stall=2.0)] * 2)
    api = real_api(upstream.url, retries=1)
    try:
        with pytest.raises(FetchFailed) as exc_info:
            api.fetch_detail(7)
    finally:
        api.close()
    assert not isinstance(exc_info.value, ApiUnreachable)
    assert str(exc_info.value).startswith("read_timeout after 1 retries")
    assert len(upstream.seen) == 2


@pytest.fixture
def closed_port_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_refused_connection_is_not_sent_for_a_post(closed_port_url):
    api = real_api(closed_port_url)
    try:
        result = api.post_batch(RECORDS)
    finally:
        api.close()
    assert result.outcome == PostOutcome.NEVER_RECEIVED
    assert result.status is None and result.error.startswith("connect_error")


def test_a_refused_connection_makes_a_get_unreachable(closed_port_url):
    api = real_api(closed_port_url)
    try:
        with pytest.raises(ApiUnreachable, match=r"^connect_error after 3 retries"):
            api.list_page(1)
    finally:
        api.close()


def test_a_body_cut_short_fails_that_fetch_without_calling_the_api_unreachable(upstream, live):
    upstream.script.append(Answer(body=b'{"id": 1, "name": "Cobra", "born_at": null, "friends": ""}', cut=True))
    with pytest.raises(FetchFailed, match="body cut short") as caught:
        live.fetch_detail(1)
    assert not isinstance(caught.value, ApiUnreachable)
    assert live.fetch_detail(1).animal_id == 1  # the next request is served normally


def test_the_real_server_sees_the_bearer_token_on_every_try(upstream):
    upstream.answer(Answer(503), Answer(200))
    api = real_api(upstream.url, token="s3cret")
    try:
        api.fetch_detail(7)
    finally:
        api.close()
    assert upstream.authorization == ["Bearer s3cret"] * 2


def test_the_real_server_sees_no_authorization_without_a_token(upstream, live):
    live.fetch_detail(7)
    assert upstream.authorization == [None]


def test_a_get_dropped_every_time_fails_but_is_not_unreachable_and_names_its_retries(upstream, live):
    """Connections that open and then close (a reset after an answer) mean the API is up: no outage."""
    upstream.answer(*[Answer(drop=True)] * 4)
    with pytest.raises(FetchFailed) as exc_info:
        live.fetch_detail(7)
    assert not isinstance(exc_info.value, ApiUnreachable)
    assert str(exc_info.value).startswith("connection_dropped after 3 retries")
    assert exc_info.value.retries == ["connection_dropped"] * 3
    assert len(upstream.seen) == 4


def test_a_get_that_finally_fails_still_counts_its_retries(upstream, live):
    upstream.answer(*[Answer(502, b"bad gateway")] * 4)
    with pytest.raises(FetchFailed) as by_status:
        live.fetch_detail(7)
    upstream.answer(*[Answer(stall=2.0)] * 4)
    with pytest.raises(FetchFailed) as by_stall:
        live.list_page(1)
    assert by_status.value.retries == ["http_502"] * 3
    assert by_stall.value.retries == ["read_timeout"] * 3


def test_a_refused_connection_names_the_retries_it_made(closed_port_url):
    api = real_api(closed_port_url)
    try:
        with pytest.raises(ApiUnreachable) as exc_info:
            api.fetch_detail(1)
    finally:
        api.close()
    assert exc_info.value.retries == ["connect_error"] * 3


DETAIL = b'{"id": 7, "name": "Cobra", "born_at": null, "friends": ""}'


def trickle_api(url: str, **overrides) -> AnimalsApi:
    return real_api(url, **{"get_timeout": 1.0, "get_deadline": 0.4, **overrides})


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_an_answer_that_trickles_is_cut_at_the_deadline_and_resent(trickler, mode):
    """A byte every 0.05 s never trips the 1 s read timeout; the 0.4 s deadline ends the try and it is re-sent."""
    trickler.bodies = lambda path: DETAIL
    trickler.script.append(mode)
    api = trickle_api(trickler.url)
    try:
        detail = api.fetch_detail(7)
    finally:
        api.close()
    # The deadline, not the read timeout and not the trickle's end, ended the first try: it is named, and re-sent.
    assert detail.body == DETAIL and detail.retries == ("get_deadline",) and len(trickler.seen) == 2


def failed_fetch(api: AnimalsApi, expected: type[FetchFailed]) -> tuple[FetchFailed, float]:
    """Fetch detail 7, which must raise `expected`; the exception and the seconds it took. Closes `api`."""
    started = time.monotonic()
    try:
        with pytest.raises(expected) as exc_info:
            api.fetch_detail(7)
    finally:
        api.close()
    return exc_info.value, time.monotonic() - started


def test_an_answer_that_always_trickles_fails_after_the_budget_not_never(trickler):
    trickler.script.extend(["headers", "body"] * 3)
    failure, seconds = failed_fetch(trickle_api(trickler.url, retries=3), FetchFailed)
    assert not isinstance(failure, ApiUnreachable)
    assert seconds < 4 * 0.4 + 1.5
    assert failure.retries.count("get_deadline") == 3


def test_an_api_that_goes_down_under_a_get_is_unreachable_even_past_the_deadline():
    """The outage of `make torture`: a GET's try is waiting when the API stops; urllib3 then retries refused
    connections with backoff past the deadline of that first try. No try was cut (none was waiting on a socket),
    so the GET ends unreachable (the run stops, the animal stays to fetch), not failed with `get_deadline`."""
    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def go_down() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)  # the first try's request, never answered
        listener.close()  # from now on, every connection is refused
        time.sleep(0.1)
        conn.close()

    threading.Thread(target=go_down, daemon=True).start()
    failure, seconds = failed_fetch(real_api(url, get_timeout=5.0, get_deadline=0.3, retries=4, backoff=0.1), ApiUnreachable)
    assert seconds > 0.3  # the refused retries did outlast the first try's deadline
    assert failure.retries == ["connection_dropped", "connect_error", "connect_error", "connect_error"]


def test_abandoning_gets_ends_one_in_a_trickle_at_once_and_refuses_the_next(trickler):
    trickler.script.extend(["headers"] * 20)
    api = trickle_api(trickler.url, get_deadline=60.0)
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            api.fetch_detail(7)
        except FetchFailed as exc:
            outcome.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    deadline = time.monotonic() + 5
    while not trickler.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # well inside the trickle
    api.abandon_gets()
    worker.join(30)
    try:
        # Left alone, the trickle would end in a fetched animal: an "abandoned" failure proves the GET was cut.
        assert not worker.is_alive()
        assert [str(exc) for exc in outcome] == ["abandoned: the run is stopping"]
        with pytest.raises(FetchFailed, match="abandoned"):
            api.fetch_detail(8)
        assert len(trickler.seen) == 1  # nothing was re-sent after the stop
    finally:
        api.close()


# --- Expect: 100-continue against a server that behaves like uvicorn (tests/continue_server.py) -------


def batch(*ids: int) -> list[dict]:
    return [{"id": i, "name": f"a{i}", "born_at": None, "friends": []} for i in ids]


def settle_handlers(server: ContinueServer, count: int) -> None:
    """Wait until `count` POST handlers have finished, stalled ones included."""
    for _ in range(count):
        assert server.handlers_done.acquire(timeout=5)


def test_a_post_stalled_before_handling_is_resent_and_delivered_exactly_once_within_about_a_second(continuing):
    server = continuing()
    server.script(Fate(), Fate(stall=1.5), Fate())
    api = real_api(server.url, get_timeout=0.3, post_timeout=5.0)
    try:
        assert api.post_batch(batch(1)).release is BodyRelease.AFTER_CONTINUE  # the server has spoken 100 once
        result = api.post_batch(batch(2, 3))
    finally:
        api.close()
    # Not the 1.5 s stall: the first try was closed with its body withheld (named) and the re-send took it; the
    # stalled handler later finds its client gone (abandoned, below). Evidence, not a stopwatch.
    assert (result.outcome, result.release, result.retries) == (PostOutcome.DELIVERED, BodyRelease.AFTER_CONTINUE, ("body_withheld",))
    settle_handlers(server, 3)  # the stalled handler wakes, goes to read the body, finds the client gone
    assert server.ledger.delivered == {1: 1, 2: 1, 3: 1}
    assert (server.ledger.posts, server.ledger.bodies_read, server.ledger.abandoned) == (3, 2, 1)


def test_a_5xx_before_100_continue_is_retried_with_the_body_never_sent(continuing):
    server = continuing()
    server.script(Fate(fail_before=503), Fate())
    with closing(real_api(server.url)) as api:
        result = api.post_batch(batch(7))
        again = api.post_batch(batch(8))  # the refused request promised a body it never sent: a fresh connection
    assert (result.outcome, result.retries, result.release) == (PostOutcome.DELIVERED, ("http_503",), BodyRelease.AFTER_CONTINUE)
    assert again.outcome is PostOutcome.DELIVERED
    assert server.ledger.delivered == {7: 1, 8: 1}
    assert (server.ledger.posts, server.ledger.bodies_read, server.ledger.connections) == (3, 2, 2)


def test_a_connection_closed_before_100_continue_is_resent_safely(continuing):
    server = continuing()
    server.script(Fate(), Fate(hang_up=True), Fate())
    with closing(real_api(server.url)) as api:
        api.post_batch(batch(1))
        result = api.post_batch(batch(2))
    # Without 100-continue a connection dropped after the request is an unknown outcome; here the body never left.
    assert (result.outcome, result.retries) == (PostOutcome.DELIVERED, ("body_withheld",))
    assert server.ledger.delivered == {1: 1, 2: 1}


def test_a_final_5xx_before_100_continue_is_refused_before_reading(continuing):
    server = continuing()
    server.script(*[Fate(fail_before=502)] * 4)
    with closing(real_api(server.url)) as api:
        result = api.post_batch(batch(7))
    assert (result.outcome, result.status, result.release) == (PostOutcome.REFUSED_BEFORE_READING, 502, BodyRelease.WITHHELD)
    assert result.unread and result.retries == ("http_502",) * 3
    assert server.ledger.bodies_read == 0 and not server.ledger.delivered


def test_a_5xx_after_the_body_is_refused_after_reading_and_never_resent(continuing):
    server = continuing()
    server.script(Fate(fail_after=True), Fate())
    with closing(real_api(server.url)) as api:
        result = api.post_batch(batch(7))
    assert (result.outcome, result.status, result.body) == (PostOutcome.REFUSED_AFTER_READING, 500, "Internal Server Error")
    assert result.retries == () and not result.unread
    assert (server.ledger.posts, server.ledger.bodies_read) == (1, 1)  # one try, though 3 retries were allowed


def test_a_server_that_never_sends_100_continue_gets_every_batch_exactly_once(continuing):
    server = continuing(speaks_continue=False)
    server.script(Fate(), Fate(stall=0.6), Fate(), Fate(stall=0.3), Fate())
    with closing(real_api(server.url, get_timeout=0.2, post_timeout=3.0)) as api:
        results = [api.post_batch(batch(i)) for i in range(1, 6)]
    # The body follows the 0.2 s wait, as RFC 9110 and curl do; silence proves nothing, so the stall is waited out.
    # After three answers without a 100 the server is taken not to speak it, and the wait is no longer paid.
    assert [(r.outcome, r.release, r.retries) for r in results] == (
        [(PostOutcome.DELIVERED, BodyRelease.AFTER_WAIT, ())] * 3 + [(PostOutcome.DELIVERED, BodyRelease.AT_ONCE, ())] * 2
    )
    settle_handlers(server, 5)
    assert server.ledger.delivered == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    assert (server.ledger.posts, server.ledger.abandoned, server.ledger.continues_sent) == (5, 0, 0)


def test_before_any_100_continue_a_stalled_post_sends_its_body_after_the_wait(continuing):
    server = continuing()
    server.script(Fate(stall=0.5))
    with closing(real_api(server.url, get_timeout=0.2, post_timeout=3.0)) as api:
        result = api.post_batch(batch(1))
    # The 100 Continue that follows the stall comes after the body: late, but the handler asked for it.
    assert (result.outcome, result.release, result.retries) == (PostOutcome.DELIVERED, BodyRelease.LATE_CONTINUE, ())
    assert server.ledger.delivered == {1: 1} and server.ledger.posts == 1


def test_a_late_100_continue_is_not_silence_so_slow_handler_starts_never_switch_to_bodies_at_once(continuing):
    server = continuing()
    server.script(Fate(stall=0.5), Fate(stall=0.5), Fate(), Fate(stall=0.5), Fate(), Fate())
    with closing(real_api(server.url, get_timeout=0.2, post_timeout=3.0)) as api:
        results = [api.post_batch(batch(i)) for i in range(1, 5)]
        speaks = api.session.get_adapter(api.base_url + HOME_PATH).expect.speaks_continue
    # The first slow start's late 100 proves the server speaks 100-continue: a later stall withholds the body and
    # re-sends it, and no run of slow starts is ever taken for a server that stays silent (bodies sent at once).
    assert [(r.outcome, r.release, r.retries) for r in results] == [
        (PostOutcome.DELIVERED, BodyRelease.LATE_CONTINUE, ()),
        (PostOutcome.DELIVERED, BodyRelease.AFTER_CONTINUE, ("body_withheld",)),
        (PostOutcome.DELIVERED, BodyRelease.AFTER_CONTINUE, ("body_withheld",)),
        (PostOutcome.DELIVERED, BodyRelease.AFTER_CONTINUE, ()),
    ]
    assert speaks
    settle_handlers(server, 6)
    assert server.ledger.delivered == {1: 1, 2: 1, 3: 1, 4: 1}


def test_a_stall_on_every_try_is_never_received(continuing):
    server = continuing()
    server.script(Fate(), *[Fate(stall=3.0)] * 2)
    with closing(real_api(server.url, retries=1, get_timeout=0.2)) as api:
        api.post_batch(batch(1))
        result = api.post_batch(batch(2))
    assert result.outcome is PostOutcome.NEVER_RECEIVED
    assert result.error == "body_withheld: no 100 Continue within 0.2 s: body withheld, connection closed"
    assert server.ledger.delivered == {1: 1}


def test_keep_alive_carries_posts_and_gets_on_their_connections(continuing):
    server = continuing(ids=[1])
    with closing(real_api(server.url)) as api:
        for i in range(3):
            assert api.post_batch(batch(i)).outcome is PostOutcome.DELIVERED
    assert server.ledger.connections == 1 and server.ledger.continues_sent == 3


# --- Expect: 100-continue as values ------------------------------------------------------------------


def test_a_post_asks_for_100_continue_and_a_get_does_not(api, mocked):
    mocked.post(HOME_URL, status=200, match=[matchers.header_matcher({"Expect": "100-continue"})])
    mocked.get(LIST_URL + "/7", body=b"{}")
    assert api.post_batch(RECORDS).outcome is PostOutcome.DELIVERED
    api.fetch_detail(7)
    assert "Expect" not in mocked.calls[1].request.headers


@pytest.mark.parametrize(
    "status, release, outcome",
    [
        (200, BodyRelease.AFTER_CONTINUE, PostOutcome.DELIVERED),
        (201, None, PostOutcome.DELIVERED),
        (503, BodyRelease.WITHHELD, PostOutcome.REFUSED_BEFORE_READING),
        (422, BodyRelease.WITHHELD, PostOutcome.REFUSED_BEFORE_READING),
        (500, BodyRelease.AFTER_CONTINUE, PostOutcome.REFUSED_AFTER_READING),
        (422, BodyRelease.AFTER_CONTINUE, PostOutcome.REFUSED_AFTER_READING),
        (500, BodyRelease.AFTER_WAIT, PostOutcome.REFUSED_BEFORE_READING),  # no evidence: the old rule
        (502, BodyRelease.AT_ONCE, PostOutcome.REFUSED_BEFORE_READING),
        (500, None, PostOutcome.REFUSED_BEFORE_READING),
        (400, None, PostOutcome.REFUSED_AFTER_READING),
        (200, BodyRelease.WITHHELD, PostOutcome.REFUSED_BEFORE_READING),  # a 2xx before the body: no delivery
        (204, BodyRelease.WITHHELD, PostOutcome.REFUSED_BEFORE_READING),
        (301, BodyRelease.WITHHELD, PostOutcome.REFUSED_BEFORE_READING),  # a redirect before the body: never read
        (302, BodyRelease.AFTER_CONTINUE, PostOutcome.UNKNOWN),  # after it: never followed, maybe processed
        (303, BodyRelease.AT_ONCE, PostOutcome.UNKNOWN),
        (307, None, PostOutcome.UNKNOWN),
        (500, BodyRelease.LATE_CONTINUE, PostOutcome.REFUSED_AFTER_READING),  # a late 100: the handler read it
        (200, BodyRelease.LATE_CONTINUE, PostOutcome.DELIVERED),
    ],
)
def test_classify_answer_by_status_and_what_became_of_the_body(status, release, outcome):
    assert classify_answer(status, release) is outcome


def _answered(release):
    """A urllib3 503 response on which the connection noted the body's fate, as ContinueConnection does."""
    response = HTTPResponse(body=b"", status=503)
    setattr(response, "animal_sync_body_release", release)
    return response


@pytest.mark.parametrize("release", [None, BodyRelease.AFTER_WAIT, BodyRelease.AT_ONCE, BodyRelease.WITHHELD])
def test_the_post_policy_retries_a_5xx_the_handler_did_not_read(release):
    retry = post_retry(4, 0)
    assert isinstance(retry, ContinueRetry)
    assert retry.increment("POST", "/home", response=_answered(release)).status == 3


def test_the_post_policy_never_retries_a_5xx_after_100_continue():
    with pytest.raises(MaxRetryError):
        post_retry(4, 0).increment("POST", "/home", response=_answered(BodyRelease.AFTER_CONTINUE))


def test_a_withheld_body_counts_against_the_connect_budget():
    retry = post_retry(4, 0).increment("POST", "/home", error=BodyWithheld("no 100 Continue"))
    assert (retry.connect, retry.read) == (3, 0)


# --- the release gate: the journal's `sending` mark is asked for just before a body leaves, never earlier ------


def recording_gate(server: ContinueServer, answer: bool = True) -> tuple[list[int], Any]:
    """A gate that notes how many bodies the server had read when it was asked, and answers `answer`."""
    asked: list[int] = []

    def gate() -> bool:
        asked.append(server.ledger.bodies_read)
        return answer

    return asked, gate


def test_the_release_gate_is_asked_once_per_body_that_leaves_and_never_for_one_withheld(continuing):
    server = continuing()
    server.script(Fate(), Fate(stall=1.5), Fate(), Fate(fail_before=503), Fate())
    asked, gate = recording_gate(server)
    api = real_api(server.url, get_timeout=0.3, post_timeout=5.0)
    try:
        first = api.post_batch(batch(1), gate)
        stalled = api.post_batch(batch(2), gate)  # withheld on the stalled try, released on the re-send
        refused = api.post_batch(batch(3), gate)  # a 503 before 100 Continue: released on the retry only
    finally:
        api.close()
    assert [r.outcome for r in (first, stalled, refused)] == [PostOutcome.DELIVERED] * 3
    assert (stalled.retries, refused.retries) == (("body_withheld",), ("http_503",))
    assert asked == [0, 1, 2]  # once per delivered batch, each time before the server read that body
    settle_handlers(server, 5)
    assert server.ledger.delivered == {1: 1, 2: 1, 3: 1}


def test_a_release_the_gate_refuses_leaves_the_body_unsent_and_is_not_retried(continuing):
    server = continuing()
    server.script(Fate(), Fate())
    asked, gate = recording_gate(server, answer=False)
    with closing(real_api(server.url)) as api:
        result = api.post_batch(batch(1), gate)
    assert result.outcome is PostOutcome.NEVER_RECEIVED and "body_withheld" in (result.error or "")
    assert asked == [0]  # asked once: asking again cannot change its answer
    settle_handlers(server, 1)
    assert (server.ledger.posts, server.ledger.bodies_read) == (1, 0) and not server.ledger.delivered


def test_the_release_gate_is_asked_before_the_body_of_a_server_that_never_speaks_100_continue(continuing):
    server = continuing(speaks_continue=False)
    server.script(*[Fate()] * 4)
    asked, gate = recording_gate(server)
    with closing(real_api(server.url, get_timeout=0.1)) as api:
        results = [api.post_batch(batch(i), gate) for i in range(4)]
    assert [r.release for r in results] == [BodyRelease.AFTER_WAIT] * 3 + [BodyRelease.AT_ONCE]
    assert asked == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("base_url", "proxy", "verify"),
    [
        ("http://127.0.0.1:9", None, True),  # plain HTTP: no bundle, so requests stats no file per request
        ("https://api.example", None, "/etc/bundle.pem"),
        ("http://127.0.0.1:9", "https://proxy.example:3128", "/etc/bundle.pem"),  # TLS to the proxy
    ],
)
def test_the_ca_bundle_is_used_only_where_tls_is_spoken(monkeypatch: pytest.MonkeyPatch, base_url: str, proxy: str | None, verify: Any) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/bundle.pem")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    if proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)
    api = AnimalsApi(Settings(base_url=base_url, retries=0))
    try:
        assert api.session.verify == verify
    finally:
        api.close()
