"""The client at the edges, on raw-socket servers (tests/raw_servers.py): no doubt without a cause, no connection
reused after a 5xx, no redirect followed for a POST, no 2xx before the body taken for a delivery, the write-ahead
release through a proxy, and a long Retry-After said aloud and cut short by a stop."""

from __future__ import annotations

import json
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from contextlib import closing
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import cli
from raw_servers import Conduct, RawServer
from structlog.testing import capture_logs

from animal_sync.client.api import HOME_PATH, LIST_PATH, AnimalsApi, FetchFailed
from animal_sync.config import Settings
from animal_sync.client.continue100 import BodyRelease
from animal_sync.client.outcomes import PostOutcome

PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def raw(monkeypatch):
    """Factory: a raw server on 127.0.0.1 serving its connections by a script of Conducts."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    servers: list[RawServer] = []

    def start(*script: Conduct) -> RawServer:
        servers.append(RawServer(*script))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def client(url: str, **overrides) -> AnimalsApi:
    stop = overrides.pop("stop", None)
    settings = dict(base_url=url, retries=3, backoff=0, connect_timeout=1.0, get_timeout=0.5, post_timeout=2.0)
    made = Settings(**{**settings, **overrides})
    return AnimalsApi(made) if stop is None else AnimalsApi(made, stop)


def batch(*ids: int) -> list[dict]:
    return [{"id": i, "name": f"a{i}", "born_at": None, "friends": []} for i in ids]


# --- never in doubt without a cause ----------------------------------------------------------------------------


@pytest.mark.parametrize("after_headers", ["reset", "close"])
def test_an_error_after_the_headers_before_the_body_is_never_received_and_resent_at_once(raw, after_headers):
    server = raw(Conduct(after_headers=after_headers))
    with closing(client(server.url)) as api:
        result = api.post_batch(batch(1))
    assert (result.outcome, result.retries, result.release) == (
        PostOutcome.DELIVERED, ("body_withheld",), BodyRelease.AFTER_CONTINUE
    )
    assert server.seen.delivered == {1: 1} and server.seen.bodies_read == 1


@pytest.mark.parametrize("after_headers", ["reset", "close"])
def test_an_error_before_the_body_on_every_try_is_never_received_not_unknown(raw, after_headers):
    server = raw(*[Conduct(after_headers=after_headers)] * 2)
    with closing(client(server.url, retries=1)) as api:
        result = api.post_batch(batch(1))
    assert result.outcome is PostOutcome.NEVER_RECEIVED, result.error
    assert result.error.startswith("body_withheld") and server.seen.bodies_read == 0


def test_a_close_after_the_body_was_read_without_an_answer_is_unknown_and_never_resent(raw):
    server = raw(Conduct(close_after_body=True))
    with closing(client(server.url)) as api:
        result = api.post_batch(batch(1))
    assert result.outcome is PostOutcome.UNKNOWN and result.error.startswith("connection_dropped")
    assert server.seen.bodies_read == 1 and len(server.seen.requests) == 1


def test_a_reset_on_a_pooled_connection_the_server_dropped_is_resent_at_once_not_unknown(raw):
    server = raw(Conduct(reset_next=True))  # answers 200, then resets at the next request's headers
    with closing(client(server.url)) as api:
        first = api.post_batch(batch(1))
        second = api.post_batch(batch(2))
    assert first.outcome is PostOutcome.DELIVERED
    assert (second.outcome, second.retries) == (PostOutcome.DELIVERED, ("body_withheld",)), second.error
    assert server.seen.delivered == {1: 1, 2: 1}


def test_the_issue_sequence_a_strict_500_then_a_dropped_connection_never_leaves_a_fresh_batch_in_doubt(raw):
    """POST [1, 2]: 200. The same again: uvicorn's 500 (no Connection: close), then it drops the connection.
    A fresh batch on the pool must be delivered, not `unknown`."""
    server = raw()
    with closing(client(server.url)) as api:
        first = api.post_batch(batch(1, 2))
        repeat = api.post_batch(batch(1, 2))
        fresh = api.post_batch(batch(3))
    assert first.outcome is PostOutcome.DELIVERED
    assert (repeat.outcome, repeat.status) == (PostOutcome.REFUSED_AFTER_READING, 500)
    assert fresh.outcome is PostOutcome.DELIVERED, fresh.error
    assert server.seen.delivered == {1: 1, 2: 1, 3: 1} and server.seen.refused == 1


# --- no reuse of a connection that carried a 5xx -----------------------------------------------------------------


def test_a_get_answered_5xx_is_retried_on_a_fresh_connection(raw):
    server = raw(Conduct(status=503, reset_next=True))
    with closing(client(server.url)) as api:
        detail = api.fetch_detail(7)
    assert detail.retries == ("http_503",)  # not ("http_503", "connection_dropped"): the 503's connection is gone
    assert server.seen.connections == 2 and len(server.seen.requests) == 2


def test_a_post_answered_5xx_closes_its_connection(raw):
    server = raw(Conduct(status=500, reset_next=True))  # read the body, answer 500, then drop the connection
    with closing(client(server.url)) as api:
        refused = api.post_batch(batch(1))
        after = api.post_batch(batch(2))
    assert (refused.outcome, refused.status) == (PostOutcome.REFUSED_AFTER_READING, 500)
    assert (after.outcome, after.retries) == (PostOutcome.DELIVERED, ())
    assert server.seen.connections == 2 and server.seen.delivered == {2: 1}


# --- redirects and early answers are never a delivery ----------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_after_the_body_is_not_followed_and_is_in_doubt_never_delivered(raw, status):
    server = raw(Conduct(status=status, headers=(("Location", "/elsewhere"),)))
    with closing(client(server.url)) as api:
        result = api.post_batch(batch(1))
    assert (result.outcome, result.status, result.release) == (PostOutcome.UNKNOWN, status, BodyRelease.AFTER_CONTINUE)
    assert result.error == f"HTTP {status} redirect to '/elsewhere' after the body was sent: not followed for a POST"
    assert server.seen.requests == [("POST", HOME_PATH)]  # nothing went to /elsewhere, as a GET or a POST


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_before_the_body_is_refused_before_reading(raw, status):
    server = raw(Conduct(status=status, early=True, headers=(("Location", "/elsewhere"),)))
    with closing(client(server.url)) as api:
        result = api.post_batch(batch(1))
    assert (result.outcome, result.release) == (PostOutcome.REFUSED_BEFORE_READING, BodyRelease.WITHHELD)
    assert "before the body was sent: not followed for a POST" in result.error
    assert server.seen.requests == [("POST", HOME_PATH)] and server.seen.bodies_read == 0


@pytest.mark.parametrize("status", [200, 201, 204])
def test_a_2xx_before_the_body_was_read_is_never_a_delivery(raw, status):
    server = raw(Conduct(status=status, early=True))
    with closing(client(server.url)) as api:
        result = api.post_batch(batch(1))
    assert (result.outcome, result.status, result.release) == (
        PostOutcome.REFUSED_BEFORE_READING, status, BodyRelease.WITHHELD
    )
    assert result.error == f"HTTP {status} before the body was sent: the server never read the batch"
    assert server.seen.bodies_read == 0


def test_a_get_redirect_is_not_followed_and_fails_that_fetch(raw):
    server = raw(Conduct(status=301, headers=(("Location", "/elsewhere"),)))
    with closing(client(server.url)) as api, pytest.raises(FetchFailed, match="HTTP 301 redirect to '/elsewhere': not followed"):
        api.fetch_detail(7)
    assert server.seen.requests == [("GET", LIST_PATH + "/7")]


# --- the body's departure is told at once ---------------------------------------------------------------------


class AnswerAfterLeft:
    """One POST served by hand: 100 Continue, the body read, then the answer only once `left` was told (or 5 s)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.told = threading.Event()
        self.answered_after_told: bool | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as reader:
            head = b"".join(iter(reader.readline, b"\r\n"))
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            reader.read(length)
            self.answered_after_told = self.told.wait(5)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")


def test_a_released_body_is_told_gone_as_soon_as_it_is_sent_before_the_answer(monkeypatch):
    """The coordinator waits for `left` after each release (issue 16: the kill window between the `sending`
    commit and the body's send): it must come when the body's send returns, not when the answer does."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    server = AnswerAfterLeft()
    said: list[str] = []

    def left() -> None:
        said.append("left")
        server.told.set()

    with closing(client(server.url, post_timeout=10.0)) as api:
        result = api.post_batch(batch(1), lambda: said.append("ask") or True, left)
    server.sock.close()
    assert result.outcome is PostOutcome.DELIVERED and said == ["ask", "left"]
    assert server.answered_after_told is True  # the server held its answer until `left` was told


@pytest.mark.parametrize(
    "conduct, told",
    [
        (Conduct(after_headers="reset"), ["ask", "left"]),  # the first try never released; its re-send did, once
        (Conduct(close_after_body=True), ["ask", "left"]),  # released, then no answer: told once, never re-sent
        (Conduct(status=200, early=True), []),  # answered before the body: never released, nothing to tell
    ],
)
def test_left_is_told_once_for_each_released_body_and_never_for_a_withheld_one(raw, conduct, told):
    server = raw(conduct)
    said: list[str] = []
    with closing(client(server.url)) as api:
        api.post_batch(batch(1), lambda: said.append("ask") or True, lambda: said.append("left"))
    assert said == told


def test_a_refused_release_is_never_told_gone(raw):
    server = raw()
    said: list[str] = []
    with closing(client(server.url)) as api:
        result = api.post_batch(batch(1), lambda: said.append("ask") and False, lambda: said.append("left"))
    assert result.outcome is PostOutcome.NEVER_RECEIVED and said == ["ask"] and server.seen.bodies_read == 0


# --- through a proxy ------------------------------------------------------------------------------------------


class ForwardingProxy:
    """A tiny HTTP forwarding proxy on 127.0.0.1: each request's absolute-form target is rewritten to origin form
    and sent on to its host; everything else (100 Continue, bodies, answers) is relayed byte for byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.requests: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def stop(self) -> None:
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream: socket.socket | None = None
        buffer = bytearray()

        def pump(enough) -> None:
            """Relay the upstream's bytes to the client while reading the client's until `enough(buffer)`."""
            while not enough(buffer):
                for ready in select.select([conn] + ([upstream] if upstream else []), [], [], 5)[0]:
                    data = ready.recv(65536)
                    if not data:
                        raise OSError("closed")
                    if ready is conn:
                        buffer.extend(data)
                    else:
                        conn.sendall(data)

        try:
            while True:
                pump(lambda b: b"\r\n\r\n" in b)
                end = buffer.index(b"\r\n\r\n") + 4
                head, buffer[:] = bytes(buffer[:end]), buffer[end:]
                line, _, rest = head.partition(b"\r\n")
                method, target, version = line.split(b" ", 2)
                parts = urlsplit(target.decode())
                self.requests.append(f"{method.decode()} {target.decode()}")
                if upstream is None:
                    upstream = socket.create_connection((parts.hostname, parts.port))
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                upstream.sendall(b" ".join([method, path.encode(), version]) + b"\r\n" + rest)
                length = next(
                    (int(h.split(b":", 1)[1]) for h in rest.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
                )
                pump(lambda b: len(b) >= length)
                upstream.sendall(bytes(buffer[:length]))
                del buffer[:length]
        except OSError:
            return
        finally:
            conn.close()
            if upstream is not None:
                upstream.close()


def post_through(proxy, server) -> tuple[Any, list[int]]:
    """POST batch 1 through `proxy` (HTTP_PROXY already names it), then stop the proxy; the answer, and how many
    bodies the server had read each time the release gate was asked (0: asked before the body left)."""
    asked: list[int] = []

    def gate() -> bool:
        asked.append(server.seen.bodies_read)
        return True

    try:
        with closing(client(server.url)) as api:
            return api.post_batch(batch(1), gate), asked
    finally:
        proxy.stop()


def test_a_post_through_an_http_proxy_journals_its_release_before_the_body_leaves(raw, monkeypatch):
    server = raw()
    proxy = ForwardingProxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    result, asked = post_through(proxy, server)
    assert proxy.requests == [f"POST {server.url}{HOME_PATH}"]  # it did go through the proxy
    assert (result.outcome, result.release) == (PostOutcome.DELIVERED, BodyRelease.AFTER_CONTINUE)
    assert asked == [0]  # the write-ahead `sending` mark was asked for before the server read the body
    assert server.seen.delivered == {1: 1}


class TlsForwardingProxy(ForwardingProxy):
    """The same forwarding proxy spoken to over TLS (`HTTP_PROXY=https://...`): urllib3 reaches it with an HTTPS
    pool, whose connections are not continue100's, though the API's own URL is plain http."""

    def __init__(self, cert: str, key: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        super().__init__()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn = self.context.wrap_socket(conn, server_side=True)
        except OSError:
            conn.close()
            return
        super()._serve(conn)


@pytest.fixture(scope="module")
def proxy_cert(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made by the openssl command (Debian's, as in CI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make the TLS proxy's certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = str(where / "cert.pem"), str(where / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_a_post_through_an_https_proxy_journals_its_release_before_the_body_leaves(raw, monkeypatch, proxy_cert):
    """It used to leave without asking the gate: the batch stayed `withheld` while its body was out, so a kill
    then a resume re-sent it as provably unsent, a duplicate nobody named."""
    server = raw()
    proxy = TlsForwardingProxy(*proxy_cert)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    result, asked = post_through(proxy, server)
    assert proxy.requests == [f"POST {server.url}{HOME_PATH}"]  # it did go through the proxy
    assert result.outcome is PostOutcome.DELIVERED and server.seen.delivered == {1: 1}
    assert asked == [0]  # the write-ahead `sending` mark was asked for before the server read the body


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_a_body_read_then_dropped_behind_an_https_proxy_is_unknown_not_never_received(raw, monkeypatch, proxy_cert):
    """It used to be `never_received` (no continue100 connection saw the body leave), so the batch went back to
    pending and was sent again: the server held it twice, and nothing was in doubt."""
    server = raw(Conduct(close_after_body=True))
    proxy = TlsForwardingProxy(*proxy_cert)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    try:
        with closing(client(server.url)) as api:
            result = api.post_batch(batch(1), lambda: True)
    finally:
        proxy.stop()
    assert server.seen.bodies_read == 1 and len(server.seen.requests) == 1  # read once, never re-sent
    assert result.outcome is PostOutcome.UNKNOWN, result


def test_a_post_to_an_https_proxy_that_refuses_the_connection_is_never_received(raw, monkeypatch):
    """Without continue100's trace, only the error proves the body never left: a refused connection to the proxy."""
    server = raw()
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: the connection is refused
    monkeypatch.setenv("HTTP_PROXY", f"https://127.0.0.1:{port}")
    with closing(client(server.url)) as api:
        result = api.post_batch(batch(1), lambda: True)
    assert result.outcome is PostOutcome.NEVER_RECEIVED, result
    assert not server.seen.requests


def test_a_post_through_a_socks_proxy_is_refused_in_one_line_and_never_sent(raw, monkeypatch):
    server = raw()
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:9")
    with closing(client(server.url)) as api:
        result = api.post_batch(batch(1), lambda: True)
    assert result.outcome is PostOutcome.NEVER_RECEIVED
    assert result.error.startswith("proxy_refused: POSTs are not sent through the SOCKS proxy socks5://127.0.0.1:9")
    assert "\n" not in result.error and not server.seen.requests


# --- a long Retry-After: said aloud, and cut short by a stop ---------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_a_long_retry_after_is_logged_and_a_stop_ends_the_wait_at_once(raw, status):
    server = raw(Conduct(status=status, headers=(("Retry-After", "999999"),)))
    stop = threading.Event()
    outcome: list[BaseException | object] = []
    with closing(client(server.url, stop=stop)) as api:

        def fetch() -> None:
            try:
                outcome.append(api.fetch_detail(7))
            except FetchFailed as exc:
                outcome.append(exc)

        with capture_logs() as logs:
            worker = threading.Thread(target=fetch)
            worker.start()
            time.sleep(0.5)
            stopped = time.monotonic()
            stop.set()
            worker.join(timeout=5)
            waited = time.monotonic() - stopped
    assert not worker.is_alive() and waited < 1.0
    assert isinstance(outcome[0], FetchFailed) and "abandoned" in str(outcome[0])
    waits = [entry for entry in logs if entry["event"] == "retry_wait"]
    assert waits and waits[0]["seconds"] == 30 and waits[0]["retry_after"] == "999999" and waits[0]["status"] == status
    assert len(server.seen.requests) == 1  # nothing was sent after the stop


def test_a_post_stopped_during_a_retry_after_wait_keeps_its_last_answer(raw):
    server = raw(Conduct(status=503, early=True, headers=(("Retry-After", "999999"),)))
    stop = threading.Event()
    results = []
    with closing(client(server.url, stop=stop)) as api:
        worker = threading.Thread(target=lambda: results.append(api.post_batch(batch(1))))
        worker.start()
        time.sleep(0.5)
        stop.set()
        worker.join(timeout=5)
    assert not worker.is_alive()
    (result,) = results
    assert (result.outcome, result.status, result.release) == (
        PostOutcome.REFUSED_BEFORE_READING, 503, BodyRelease.WITHHELD
    )
    assert result.error.startswith("stopped while waiting to retry: HTTP 503")
    assert server.seen.bodies_read == 0 and len(server.seen.requests) == 1


def test_sigterm_during_a_long_retry_after_ends_the_run_within_a_second_and_the_wait_was_said(raw, tmp_path):
    server = raw(*[Conduct(status=429, headers=(("Retry-After", "999999"),))] * 50)
    process = subprocess.Popen(
        cli("run", "--base-url", server.url, "--journal", str(tmp_path / "j.db"), "--log-format", "json", "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not server.seen.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the 30 s wait (Retry-After 999999, capped)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        took = time.monotonic() - signalled
    finally:
        process.kill()
    events = [json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")]
    assert process.returncode == 130 and took < 2.0, took
    waits = [event for event in events if event["event"] == "retry_wait"]
    assert waits and waits[0]["seconds"] == 30 and waits[0]["retry_after"] == "999999"


@pytest.mark.parametrize("after_headers", ["reset", "close"])
def test_a_post_stopped_while_waiting_to_retry_a_failed_connection_is_never_received_not_a_crash(raw, after_headers):
    """A stop during the backoff after a try whose connection failed has no answer to keep: the body never left.

    It used to raise AttributeError out of post_batch (the wait's RetryStopped carries no response then), which
    took the run down with a traceback instead of exit 130.
    """
    server = raw(*[Conduct(after_headers=after_headers)] * 10)
    stop = threading.Event()
    results: list[object] = []
    with closing(client(server.url, stop=stop, retries=10, backoff=1.0)) as api:

        def post() -> None:
            try:
                results.append(api.post_batch(batch(1), lambda: True))
            except BaseException as exc:  # noqa: BLE001 - what escaped is the finding
                results.append(exc)

        worker = threading.Thread(target=post)
        worker.start()
        deadline = time.monotonic() + 5
        while len(server.seen.requests) < 2 and time.monotonic() < deadline:  # the second retry waits ~2 s
            time.sleep(0.01)
        time.sleep(0.2)
        stop.set()
        worker.join(timeout=5)
    assert not worker.is_alive()
    (result,) = results
    assert not isinstance(result, BaseException), repr(result)
    assert result.outcome is PostOutcome.NEVER_RECEIVED and result.status is None
    assert result.error.startswith("stopped while waiting to retry: body_withheld")
    assert server.seen.bodies_read == 0 and len(server.seen.requests) == 2
