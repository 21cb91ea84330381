"""The handshake by which a POST thread has the coordinator journal its body's release before the body leaves.

The coordinator is the journal's only writer, so a POST thread cannot write the `sending` mark itself. Instead it
asks here, just before the body leaves (after `100 Continue`, after the wait, or at once), and blocks until the
coordinator has committed the mark durably. A kill before that commit leaves the batch `withheld`: provably unsent.

A kill after the commit but before the body reaches the socket leaves a batch in doubt that the API never saw. That
window cannot be closed (the mark must be on disk first), only kept short: once it has let bodies go, the
coordinator waits (GIL released) until each POST thread says its body's send returned (`left`), instead of
running on and leaving the woken threads to wait for the GIL (up to `sys.getswitchinterval()`, 5 ms) with their
batches already marked.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

__all__ = ["BodyGate", "ReleaseDesk", "ReleaseRequest"]

LEFT_WAIT = 0.1  # seconds the coordinator waits at most for released bodies to reach their sockets (a slow reader)


@dataclass
class ReleaseRequest:
    """One POST thread's request to release a batch's body; `allowed` is valid once `answered` is set."""

    batch_id: int
    answered: threading.Event = field(default_factory=threading.Event)
    allowed: bool = False
    left: threading.Event = field(default_factory=threading.Event)  # the body's send returned (or failed)


class BodyGate:
    """One batch's POST gate: `ask` before each try's body leaves, `left` once that body's send has returned."""

    def __init__(self, desk: ReleaseDesk, batch_id: int) -> None:
        self._desk, self._batch_id = desk, batch_id
        self._request: ReleaseRequest | None = None

    def ask(self) -> bool:
        self._request = ReleaseRequest(self._batch_id)
        return self._desk.submit(self._request)

    def left(self) -> None:
        if self._request is not None:
            self._request.left.set()


class ReleaseDesk:
    """Release requests from POST threads, taken and answered by the coordinator; once closed, every answer is no."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[ReleaseRequest] = []
        self._closed = False
        self._wakeup: Future[None] = Future()

    @property
    def wakeup(self) -> Future[None]:
        """Done once a request waits: the coordinator waits on it alongside its GETs and POSTs."""
        with self._lock:
            return self._wakeup

    def gate(self, batch_id: int) -> BodyGate:
        """The release gate for one batch's POST (continue100.release_gate calls it on the POST's thread)."""
        return BodyGate(self, batch_id)

    def submit(self, request: ReleaseRequest) -> bool:
        """Block until the coordinator has journaled this release (True) or cannot (False: withhold the body)."""
        with self._lock:
            if self._closed:
                return False
            self._requests.append(request)
            if not self._wakeup.done():
                self._wakeup.set_result(None)
        request.answered.wait()
        return request.allowed

    def take(self) -> list[ReleaseRequest]:
        """The requests waiting now, for the coordinator to journal and then answer."""
        with self._lock:
            requests, self._requests = self._requests, []
            if self._wakeup.done():
                self._wakeup = Future()
            return requests

    @staticmethod
    def answer(requests: list[ReleaseRequest], allowed: bool) -> None:
        for request in requests:
            request.allowed = allowed
            request.answered.set()

    @staticmethod
    def await_left(requests: list[ReleaseRequest], timeout: float = LEFT_WAIT) -> bool:
        """Wait (GIL released) until each released body's send has returned; False if `timeout` ran out first."""
        deadline = time.monotonic() + timeout
        return all(request.left.wait(max(0.0, deadline - time.monotonic())) for request in requests)

    def close(self) -> None:
        """The coordinator is leaving: refuse what waits and all that comes, so no POST thread blocks for ever."""
        with self._lock:
            self._closed = True
        self.answer(self.take(), False)
