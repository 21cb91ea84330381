"""The handshake by which a POST thread has the coordinator journal its body's release before the body leaves.

The coordinator is the journal's only writer, so a POST thread cannot write the `sending` mark itself. Instead it
asks here, just before the body leaves (after `100 Continue`, after the wait, or at once), and blocks until the
coordinator has committed the mark durably. A kill before that commit leaves the batch `withheld`: provably unsent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

__all__ = ["ReleaseDesk", "ReleaseRequest"]


@dataclass
class ReleaseRequest:
    """One POST thread's request to release a batch's body; `allowed` is valid once `answered` is set."""

    batch_id: int
    answered: threading.Event = field(default_factory=threading.Event)
    allowed: bool = False


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

    def gate(self, batch_id: int) -> Callable[[], bool]:
        """The release gate for one batch's POST (continue100.release_gate calls it on the POST's thread)."""
        return lambda: self.ask(batch_id)

    def ask(self, batch_id: int) -> bool:
        """Block until the coordinator has journaled this release (True) or cannot (False: withhold the body)."""
        request = ReleaseRequest(batch_id)
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

    def close(self) -> None:
        """The coordinator is leaving: refuse what waits and all that comes, so no POST thread blocks for ever."""
        with self._lock:
            self._closed = True
        self.answer(self.take(), False)
