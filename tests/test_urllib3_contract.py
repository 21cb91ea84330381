"""The urllib3 internals that continue100.py and deadline.py subclass are still there, with the shapes they rely on.

pyproject pins urllib3 below 3; these fail loudly, naming the method, when a release within that range changes one
of them, instead of letting a POST send its body before `100 Continue` or a GET outlive its deadline in silence.
"""

from __future__ import annotations

import http.client
import inspect
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError
from urllib3.response import BaseHTTPResponse, HTTPResponse
from urllib3.util.retry import Retry

from animal_sync.client import continue100

from animal_sync.client import deadline

P = inspect.Parameter


def _params(function: Callable[..., Any]) -> list[tuple[str, Any]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


def test_urllib3_is_a_2_x_release() -> None:
    assert urllib3.__version__.split(".")[0] == "2", urllib3.__version__


def test_retry_increment_takes_the_arguments_continue_retry_passes_on() -> None:
    assert _params(Retry.increment)[:7] == [
        ("self", P.POSITIONAL_OR_KEYWORD), ("method", P.POSITIONAL_OR_KEYWORD), ("url", P.POSITIONAL_OR_KEYWORD),
        ("response", P.POSITIONAL_OR_KEYWORD), ("error", P.POSITIONAL_OR_KEYWORD),
        ("_pool", P.POSITIONAL_OR_KEYWORD), ("_stacktrace", P.POSITIONAL_OR_KEYWORD),
    ]
    assert [name for name, _ in _params(MaxRetryError.__init__)][:4] == ["self", "pool", "url", "reason"]
    assert "retry_after_max" in inspect.signature(Retry.__init__).parameters  # why the floor is 2.7


def test_a_withheld_body_is_still_a_connect_timeout_that_retry_counts_as_such() -> None:
    assert issubclass(continue100.BodyWithheld, ConnectTimeoutError)
    assert Retry(connect=1)._is_connection_error(continue100.BodyWithheld("x"))


def test_the_connection_methods_continue100_and_deadline_override_keep_their_signatures() -> None:
    request = inspect.signature(HTTPConnection.request).parameters
    assert list(request)[:5] == ["self", "method", "url", "body", "headers"]
    assert _params(HTTPConnection.endheaders) == [
        ("self", P.POSITIONAL_OR_KEYWORD), ("message_body", P.POSITIONAL_OR_KEYWORD), ("encode_chunked", P.KEYWORD_ONLY),
    ]
    assert _params(HTTPConnection.send)[:2] == [("self", P.POSITIONAL_OR_KEYWORD), ("data", P.POSITIONAL_OR_KEYWORD)]
    for cls in (HTTPConnection, HTTPSConnection):
        required = [p for p in inspect.signature(cls.getresponse).parameters.values()
                    if p.name != "self" and p.default is P.empty and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)]
        assert required == [], f"{cls.__name__}.getresponse now requires {required}"
    assert inspect.signature(HTTPConnection.getresponse).return_annotation in (HTTPResponse, "HTTPResponse")
    # getresponse() builds http.client's response from self.response_class, which continue100 swaps per call.
    assert "super().getresponse()" in inspect.getsource(HTTPConnection.getresponse)
    assert http.client.HTTPConnection.response_class is http.client.HTTPResponse
    assert callable(http.client.HTTPResponse.begin) and "will_close" in inspect.getsource(http.client.HTTPResponse.begin)


def test_pools_build_connections_from_connection_cls_and_pass_them_extra_keywords() -> None:
    for pool in (HTTPConnectionPool, HTTPSConnectionPool):
        assert hasattr(pool, "ConnectionCls")
        assert any(p.kind is P.VAR_KEYWORD for p in inspect.signature(pool.__init__).parameters.values())
    assert "self.ConnectionCls(" in inspect.getsource(HTTPConnectionPool._new_conn)
    manager = PoolManager()
    assert set(manager.pool_classes_by_scheme) >= {"http", "https"}  # ContinueAdapter and api.py replace "http"


def test_requests_adapter_still_builds_its_pool_manager_in_init_poolmanager() -> None:
    assert [name for name, _ in _params(HTTPAdapter.init_poolmanager)][:4] == ["self", "connections", "maxsize", "block"]
    adapter = continue100.ContinueAdapter(continue100.ExpectContinue(0.1))
    pool_class = adapter.poolmanager.pool_classes_by_scheme["http"]
    assert pool_class.func is continue100.ContinuePool and pool_class.keywords.keys() == {"expect"}


def test_a_urllib3_response_takes_the_attribute_body_release_reads_back() -> None:
    response = HTTPResponse(body=b"", status=200, preload_content=False)
    setattr(response, continue100._RELEASE_ATTR, continue100.BodyRelease.AT_ONCE)
    assert isinstance(response, BaseHTTPResponse) and continue100.body_release(response) is continue100.BodyRelease.AT_ONCE


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, list[bytes]]]:
    """A loopback socket that takes one connection and keeps what it is sent, for call-order checks."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def take() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            try:
                while chunk := conn.recv(65536):
                    received.append(chunk)
            except OSError:
                pass

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    yield server, received
    server.close()
    thread.join(5)


def test_urllib3_sends_the_headers_through_endheaders_before_the_body_through_send(listener) -> None:
    """What ContinueConnection relies on: it waits in endheaders() and drops the body in send()."""
    server, _ = listener
    calls: list[tuple[str, Any]] = []

    class Recording(HTTPConnection):
        def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
            calls.append(("endheaders", message_body))
            super().endheaders(message_body, encode_chunked=encode_chunked)  # sends the head (through send)
            calls.append(("headers sent", None))

        def send(self, data: Any) -> None:
            calls.append(("send", bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else data))
            super().send(data)

    connection = Recording("127.0.0.1", server.getsockname()[1], timeout=5)
    try:
        connection.request("POST", "/home", body=b'[{"id": 1}]', headers={"Expect": "100-continue", "Content-Type": "application/json"})
    finally:
        connection.close()
    names = [name for name, _ in calls]
    assert names.count("endheaders") == 1 and calls[names.index("endheaders")][1] is None, calls  # no body handed to it
    head = b"".join(data for name, data in calls[: names.index("headers sent")] if name == "send")
    body = b"".join(data for name, data in calls[names.index("headers sent"):] if name == "send")
    assert head.startswith(b"POST /home HTTP/1.1\r\n") and head.endswith(b"\r\n\r\n") and b"Expect: 100-continue" in head
    assert body == b'[{"id": 1}]', calls  # the body leaves after endheaders() returns, through send()


def test_deadline_s_guarded_connections_see_the_socket_before_reading_the_answer(listener) -> None:
    """What deadline.py relies on: request() comes first, and self.sock is the live socket when getresponse() runs."""
    server, _ = listener
    watchdog = deadline.Watchdog(5)
    seen: list[socket.socket | None] = []
    watchdog.watch = seen.append  # type: ignore[method-assign]
    pool = deadline.guarded_pool_classes(watchdog)["http"]("127.0.0.1", server.getsockname()[1], timeout=0.2, maxsize=1)
    connection = pool._new_conn()
    try:
        connection.request("GET", "/")
        assert seen == [None]
        with pytest.raises(Exception):
            connection.getresponse()  # the listener never answers: a read timeout, after the socket was reported
        assert len(seen) == 2 and isinstance(seen[1], socket.socket)
    finally:
        connection.close()
        pool.close()
