"""`Expect: 100-continue` for POSTs behind requests: the body leaves only once the API's handler asks for it.

The API stalls and fails by chaos *before* its handler runs, and its server (uvicorn) sends `100 Continue`
only when the handler starts reading the body. So a POST that hears nothing within a short wait is closed
with its body never sent (proof the API cannot hold it), and re-sent at once; a final answer before
`100 Continue` was given by a server that never saw the batch. requests and urllib3 do not implement
100-continue, so this module adds it below them: a urllib3 connection that holds the body back, a pool
manager that uses it, an `HTTPAdapter` that mounts them, and a `Retry` that never repeats a POST whose
body a handler read. A server that never sends `100 Continue` (HTTP/1.0, some proxies) gets the body
after the wait, as RFC 9110 and curl do; only once a server has sent one does silence count as proof.
A caller may put a release gate around a POST (`release_gate`): asked on the POST's thread just before any of
its body leaves, it journals the release; if it says no, the body is withheld and the connection closed.
The gate also keeps the POST's trace (`PostTrace`): whether any try's body left, and each answer's evidence.
Any error before a try's body left (a reset or EOF while waiting for `100 Continue`, a pooled connection the
server dropped, a timeout) is a `BodyWithheld`: the API cannot hold that batch, so it is re-sent at once.
A connection that carried a 5xx is closed after it, never reused: a server that failed (uvicorn after a handler's
exception) may drop it without a `Connection: close`, and the next request on it would meet a reset.
"""

from __future__ import annotations

import functools
import http.client
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, PoolManager
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

__all__ = [
    "EXPECT_CONTINUE",
    "AnswerResponse",
    "BodyRelease",
    "BodyWithheld",
    "ContinueAdapter",
    "ContinueRetry",
    "ExpectContinue",
    "PostTrace",
    "ReleaseRefused",
    "body_release",
    "release_gate",
]

EXPECT_CONTINUE = {"Expect": "100-continue"}  # the request header that asks for this treatment
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})[^\r\n]*\r\n")
_RELEASE_ATTR = "animal_sync_body_release"  # set on the urllib3 response, read back by body_release()
_PEEK_BYTES = 4096
_PARTIAL_PAUSE = 0.005


class BodyRelease(StrEnum):
    """What became of a POST's body: the evidence of whether the API's handler read it."""

    AFTER_CONTINUE = "after_continue"  # the handler asked for it with 100 Continue, so it read it
    AFTER_WAIT = "after_wait"  # no 100 Continue from a server not known to send one: sent anyway (as today)
    AT_ONCE = "at_once"  # a server that has answered POSTs without ever sending 100 Continue: not waited for
    LATE_CONTINUE = "late_continue"  # sent after the wait, then the handler's 100 Continue came: it read the body
    WITHHELD = "withheld"  # a final answer came first: the handler never saw the batch


class BodyWithheld(ConnectTimeoutError):
    """The connection was closed with the body never sent: the API cannot hold the batch, so re-sending is safe.

    A `ConnectTimeoutError`, so urllib3's `Retry` counts it against the connect budget, which POSTs may spend.
    """


class ReleaseRefused(BodyWithheld):
    """The release gate said no (its journal could not record the release): the body never left. Not retried."""


_gates = threading.local()  # the release gate of the POST on this thread, if any, and its trace


@dataclass
class PostTrace:
    """What the connections saw of one POST, over all its tries: whether any body left, and each answer's evidence.

    `answers` holds (status, release) per try that got a final answer, in order; the last one is the POST's answer.
    """

    body_left: bool = False
    answers: list[tuple[int, BodyRelease | None]] = field(default_factory=list)

    def unread_answer_resent(self, answered: bool = True) -> int | None:
        """The status of an answer to a body that left with no sign the handler read it, after which it was re-sent.

        urllib3 re-sends a 5xx, and a 413, 429 or 503 with `Retry-After`. Such a POST is exactly once only if that
        answer came before the handler read the body (the API's chaos does): an assumption, not a proof. None when
        no try rests on it. `answered`: the last answer is the POST's own, not re-sent; when the POST ended in an
        error instead, every answer was followed by another try.
        """
        for status, release in self.answers[:-1] if answered else self.answers:
            if release in (BodyRelease.AFTER_WAIT, BodyRelease.AT_ONCE, None):
                return status
        return None


@contextmanager
def release_gate(gate: Callable[[], bool] | None, left: Callable[[], None] | None = None) -> Iterator[PostTrace]:
    """Ask `gate` on this thread just before a POST's body leaves (every try that releases it): True lets it go.
    Then tell `left` once that try's body send has returned (or failed).

    Yields the POST's trace. Thread-local because requests and urllib3 give a request no way to carry it down to
    the connection, while they do run the whole request (and its retries) on the caller's thread.
    """
    previous = getattr(_gates, "gate", None), getattr(_gates, "left", None), getattr(_gates, "trace", None)
    _gates.gate, _gates.left, _gates.trace = gate, left, PostTrace()
    try:
        yield _gates.trace
    finally:
        _gates.gate, _gates.left, _gates.trace = previous


def _trace() -> PostTrace | None:
    return getattr(_gates, "trace", None)


class ExpectContinue:
    """One server's 100-continue behaviour in this run: how long to wait, and whether it has ever sent a 100.

    A server that answers SILENT_ANSWERS POSTs without a `100 Continue` before any has come (HTTP/1.0, a proxy)
    is taken not to speak it: its POSTs send their body at once instead of paying the wait on every batch.
    """

    SILENT_ANSWERS = 3  # the API's first POSTs all stalling is about one run in a million

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._seen = threading.Event()  # set once, read by every POST thread
        self._silent = 0
        self._lock = threading.Lock()

    @property
    def speaks_continue(self) -> bool:
        """Whether this server has answered `100 Continue` during the run: only then is silence a proof."""
        return self._seen.is_set()

    @property
    def worth_waiting(self) -> bool:
        """Whether a POST should wait for `100 Continue` at all (not for a server known to stay silent)."""
        return self._seen.is_set() or self._silent < self.SILENT_ANSWERS

    def heard_continue(self) -> None:
        self._seen.set()

    def answered_without_continue(self) -> None:
        with self._lock:
            self._silent += 1


class AnswerResponse(http.client.HTTPResponse):
    """http.client's response, except that a 5xx closes its connection, and an interim `100 Continue` is noted.

    http.client skips interim answers silently; `heard_continue` says whether one came before the final answer.
    """

    heard_continue = False

    def _read_status(self) -> tuple[str, int, str]:
        version, status, reason = super()._read_status()  # type: ignore[misc]
        if status == 100:
            self.heard_continue = True
        return version, status, reason

    def begin(self) -> None:
        super().begin()
        if self.status >= 500:
            self.will_close = True  # never reuse the connection of a server that failed: it may drop it unsaid


class ContinueConnection(HTTPConnection):
    """A urllib3 connection that, for a request carrying `Expect: 100-continue`, holds its body until asked."""

    response_class = AnswerResponse

    def __init__(self, *args: Any, expect: ExpectContinue, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expect = expect
        self._expecting = False
        self._headers_sent = self._gate_opened = False
        self._release: BodyRelease | None = None

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> None:  # type: ignore[override]
        self._expecting = any(
            key.lower() == "expect" and str(value).lower() == "100-continue" for key, value in (headers or {}).items()
        )
        self._release, self._headers_sent, self._gate_opened = None, False, False
        try:
            super().request(method, url, body=body, headers=headers, **kwargs)
        finally:
            left = getattr(_gates, "left", None)
            if self._gate_opened and left is not None:
                left()  # the body is in the socket (or its send failed): the coordinator may go on

    def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
        """Send the headers, then wait for the handler's `100 Continue` before urllib3 goes on to the body.

        Any socket error until then (a reset or EOF while waiting, a pooled connection the server dropped, a
        timeout) left the body unsent: it is a BodyWithheld, re-sent at once, never an unknown outcome.
        """
        try:
            super().endheaders(message_body, encode_chunked=encode_chunked)
            if self._expecting:
                self._release = self._await_continue() if self.expect.worth_waiting else BodyRelease.AT_ONCE
        except OSError as exc:
            raise BodyWithheld(f"{exc!r} before the body left: body withheld") from exc
        self._headers_sent = True
        if self._release is not BodyRelease.WITHHELD:  # the body is about to leave: the gate journals it first
            gate = getattr(_gates, "gate", None)
            if gate is not None:
                if not gate():
                    raise ReleaseRefused("the release of the body could not be journaled: body withheld, connection closed")
                self._gate_opened = True

    def send(self, data: Any) -> None:
        if self._release is BodyRelease.WITHHELD:
            return  # the server answered before asking for the body: it shall not have it
        trace = _trace()
        if self._headers_sent and trace is not None:
            trace.body_left = True  # from the first byte's attempt on: the server may hold it
        super().send(data)

    def getresponse(self) -> BaseHTTPResponse:  # type: ignore[override]
        release, self._release, self._expecting = self._release, None, False
        if release is BodyRelease.WITHHELD:
            # The request promised a body it never sent, so the connection cannot carry another request:
            # http.client hands a closing response the socket and drops it from this connection.
            self.response_class = _ClosingResponse
        try:
            response = super().getresponse()
        except OSError as exc:  # includes a timeout; an answer cut short before its body was sent is no doubt
            if release is BodyRelease.WITHHELD:
                raise BodyWithheld(f"{exc!r} while reading an answer given before the body: body withheld") from exc
            raise
        finally:
            self.__dict__.pop("response_class", None)
        if release is BodyRelease.AFTER_WAIT and getattr(response, "_original_response", None) is not None:
            if response._original_response.heard_continue:  # late, but the handler asked: it speaks 100-continue
                release = BodyRelease.LATE_CONTINUE
                self.expect.heard_continue()
        setattr(response, _RELEASE_ATTR, release)
        trace = _trace()
        if trace is not None:
            trace.answers.append((response.status, release))
        if release is BodyRelease.AFTER_WAIT:
            self.expect.answered_without_continue()
        return response

    def _await_continue(self) -> BodyRelease:
        """Read the interim `100 Continue` off the socket ourselves (http.client's response skips 1xx answers)."""
        sock = self.sock
        assert sock is not None  # endheaders() has just connected it
        deadline = time.monotonic() + self.expect.wait
        while True:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([sock], [], [], max(0.0, remaining))
            if not readable:
                if self.expect.speaks_continue:
                    raise BodyWithheld(f"no 100 Continue within {self.expect.wait} s: body withheld, connection closed")
                return BodyRelease.AFTER_WAIT
            peeked = sock.recv(_PEEK_BYTES, socket.MSG_PEEK)
            if not peeked:
                raise BodyWithheld("connection closed before 100 Continue: body withheld")
            status_line = _STATUS_LINE.match(peeked)
            if status_line is not None and int(status_line.group(1)) >= 200:
                return BodyRelease.WITHHELD  # a final answer before the body: getresponse() reads it
            end = peeked.find(b"\r\n\r\n")
            if status_line is None or end < 0:
                if remaining <= 0 or len(peeked) >= _PEEK_BYTES or (status_line is None and b"\n" in peeked):
                    return BodyRelease.WITHHELD  # not an interim answer: let http.client say what it is
                time.sleep(_PARTIAL_PAUSE)  # an answer split across segments: look again shortly, do not spin
                continue
            sock.recv(end + 4)  # consume exactly the interim answer; the final one is read by getresponse()
            if int(status_line.group(1)) == 100:
                self.expect.heard_continue()
                return BodyRelease.AFTER_CONTINUE
            # 102/103 are informational, not the go-ahead: keep waiting


class _ClosingResponse(AnswerResponse):
    """A response after which its connection closes, whatever the server said about keep-alive."""

    def begin(self) -> None:
        super().begin()
        self.will_close = True


class ContinuePool(HTTPConnectionPool):
    ConnectionCls = ContinueConnection


class ContinueAdapter(HTTPAdapter):
    """An `HTTPAdapter` whose plain-HTTP connections speak `Expect: 100-continue` (HTTPS sends the body at once)."""

    def __init__(self, expect: ExpectContinue, **kwargs: Any) -> None:
        self.expect = expect  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self._speak_continue(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Through an HTTP forwarding proxy the POST keeps its connection class: the same wait, gate and trace.

        A `100 Continue` relayed by a proxy is taken as the handler's; a proxy that sends its own early only makes
        a later 5xx count as read (in doubt, never re-sent), which errs on the side of the promise.
        """
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # api.py refuses POSTs through a SOCKS proxy
            self._speak_continue(manager)
        return manager

    def _speak_continue(self, manager: PoolManager) -> None:
        # The pool class is called with the connection keywords; the state rides along as one of them.
        manager.pool_classes_by_scheme = {
            **manager.pool_classes_by_scheme,
            "http": functools.partial(ContinuePool, expect=self.expect),
        }


class ContinueRetry(Retry):
    """A `Retry` that never repeats a POST whose body the handler read: its 5xx is evidence, not chaos."""

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        if isinstance(error, ReleaseRefused):  # asking again cannot change the gate's answer
            raise MaxRetryError(_pool, url or "", reason=error)
        if response is not None and body_release(response) in (BodyRelease.AFTER_CONTINUE, BodyRelease.LATE_CONTINUE):
            # urllib3 hands back this answer unretried (raise_on_status=False), as when the budget is spent.
            raise MaxRetryError(_pool, url or "", reason=None)
        return super().increment(method, url, response, error, _pool, _stacktrace)


def body_release(response: Any) -> BodyRelease | None:
    """The body's fate on the request that produced this urllib3 response; None if it did not expect 100."""
    return getattr(response, _RELEASE_ATTR, None)
