"""A total deadline for each try of a GET, and a way to drop every GET in flight at once.

A socket read timeout bounds one `recv`, not an answer: an upstream that trickles a byte every half second
(status line, headers or body) never trips it. One watchdog thread per API client holds the socket each GET
is waiting on and shuts it down when the attempt's deadline passes; the blocked read then ends, urllib3 or the
caller re-sends the GET like a stalled one. `abandon()` does the same to every GET at once and makes any
later attempt fail before it is sent, so a stopping run never waits for GETs whose results it will drop.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .continue100 import AnswerResponse
from .latency import AdaptiveCut

__all__ = ["Abandoned", "Attempt", "Watchdog", "guarded_pool_classes"]


class Abandoned(Exception):
    """The client dropped its GETs (a stopping run): not an OSError, so no retry policy re-sends it."""


@dataclass
class Attempt:
    """One GET on one thread: the deadline of the try in progress, its socket, and how often one was cut short."""

    deadline: float | None = None
    sock: socket.socket | None = None
    expired: bool = False  # the try in progress was cut short
    expiries: int = 0  # tries cut short so far (urllib3 re-sends those cut before their headers ended)


class Watchdog:
    """Shuts down the socket of any GET try that outlives its deadline; one thread, started on first use."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._local = threading.local()
        self._attempts: dict[int, Attempt] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wakes_at: float | None = None  # when the watchdog thread wakes next; None: it waits for a notify
        self._closed = False
        self.abandoned = False

    @contextmanager
    def attempt(self) -> Iterator[Attempt]:
        """Watch every try this thread makes inside the block; each try gets its own deadline as it starts."""
        if self.abandoned:
            raise Abandoned("GETs were abandoned")
        current = Attempt()
        with self._cond:
            self._attempts[id(current)] = current
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="get-deadline", daemon=True)
                self._thread.start()
        self._local.current = current
        try:
            yield current
        finally:
            self._local.current = None
            with self._cond:
                self._attempts.pop(id(current), None)

    def watch(self, sock: socket.socket | None) -> None:
        """Called by a guarded connection before it waits for an answer on `sock`: a new try starts its clock.

        With no socket (a try about to be sent), the last try's clock stops: nothing waits on an answer while a
        connection is opened or refused, so an API gone down under a GET is not mistaken for a cut try.
        """
        if self.abandoned:
            raise Abandoned("GETs were abandoned")
        current: Attempt | None = getattr(self._local, "current", None)
        if current is None:
            return
        if sock is None:
            with self._cond:
                current.deadline, current.sock, current.expired = None, None, False
            return
        with self._cond:
            current.deadline, current.sock, current.expired = time.monotonic() + self.seconds, sock, False
            # Wake the watchdog only when this deadline comes before its next wake: every try's deadline is the
            # same span from now, so that is almost never, and a GET no longer costs the watchdog a wake-up
            # (thousands a run, each a GIL hand-off and a pass over every attempt, under 16 GET threads).
            if self._wakes_at is None or current.deadline < self._wakes_at:
                self._cond.notify()

    def abandon(self) -> None:
        """Cut every GET in flight now and refuse new ones: their results will not be looked at."""
        with self._cond:
            self.abandoned = True
            for current in self._attempts.values():
                if current.sock is not None:
                    _shut(current.sock)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                waits = []
                for current in self._attempts.values():
                    if current.deadline is None or current.expired:
                        continue
                    if current.deadline <= now:
                        current.expired = True
                        current.expiries += 1
                        if current.sock is not None:
                            _shut(current.sock)
                    else:
                        waits.append(current.deadline - now)
                wait = min(waits, default=None)
                self._wakes_at = None if wait is None else now + wait
                self._cond.wait(wait)
                self._wakes_at = None


def _shut(sock: socket.socket) -> None:
    """End any blocked read on `sock` (shutdown wakes a reader; close alone does not)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing is waiting on it


def guarded_pool_classes(watchdog: Watchdog, cut: AdaptiveCut | None = None) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose connections report each socket to `watchdog` before waiting on it.

    With a `cut`, each try (urllib3's retries included) waits for its status line and headers as long as the cut
    says at that moment, not as long as it said when the GET began, and tells the cut how long it waited, or that
    it was cut: a cut raised by other threads' cut tries already helps this GET's next try.
    A connection that carried a 5xx is closed after it (AnswerResponse): a failing server may drop it unsaid.
    """

    def answer(conn: HTTPConnection, read: Callable[[], Any]) -> Any:
        watchdog.watch(conn.sock)
        if cut is None:
            return read()
        conn.timeout = cut.seconds  # urllib3 set the GET's read timeout; this try takes the current cut instead
        started = time.monotonic()
        try:
            response = read()
        except TimeoutError:  # the read timeout, not the watchdog (its shutdown ends the read as a closed socket)
            cut.cut()
            raise
        cut.observe(time.monotonic() - started)
        return response

    class GuardedHTTPConnection(HTTPConnection):
        response_class = AnswerResponse

        def request(self, *args: Any, **kwargs: Any) -> None:
            watchdog.watch(None)  # a new try: refused at once when abandoned, the last try's clock stopped
            super().request(*args, **kwargs)

        def getresponse(self) -> Any:
            return answer(self, super().getresponse)

    class GuardedHTTPSConnection(HTTPSConnection):
        response_class = AnswerResponse

        def request(self, *args: Any, **kwargs: Any) -> None:
            watchdog.watch(None)
            super().request(*args, **kwargs)

        def getresponse(self) -> Any:
            return answer(self, super().getresponse)

    class GuardedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPConnectionPool, "https": GuardedHTTPSConnectionPool}
