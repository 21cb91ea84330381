"""The retry policies as values: one urllib3 `Retry` for GETs, another for POSTs, named and configured, not
re-implemented.

GETs are idempotent and retried on every transient failure; a POST is re-sent only when the API surely did not
handle it (see `post_retry`). urllib3 decides how long to wait (backoff, `Retry-After`); the wait itself is
said aloud when it is long, and ends at once when the run is told to stop (`RetryStopped`).
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from .continue100 import ContinueRetry
from .deadline import Abandoned

__all__ = ["LOUD_WAIT", "RETRIED_STATUSES", "RetryStopped", "get_retry", "post_retry"]

RETRIED_STATUSES = frozenset({500, 502, 503, 504})
RETRY_AFTER_MAX = 30  # seconds: honour Retry-After, but never let one answer park a worker for hours
LOUD_WAIT = 2.0  # seconds: a wait between tries at least this long is logged, so a quiet run is never a mystery

_log = structlog.get_logger("animal_sync.client.retry")


class RetryStopped(Abandoned):
    """The run was told to stop while a request waited to be retried: `response` is the answer it waited after, or
    None when it waited after an error (`error`, a failed connection); `history` is the retries made so far."""

    def __init__(self, response: Any, error: BaseException | None = None, history: tuple[Any, ...] = ()) -> None:
        super().__init__("stopped while waiting to retry")
        self.response, self.error, self.history = response, error, history


class _Retry(Retry):
    """urllib3's Retry, except that a spent budget's MaxRetryError keeps the history of the retries it made, and
    that its waits are said aloud when long and cut short by `stop`.

    Without the history a GET that finally fails would hide its retries from the counters (urllib3 drops it).
    urllib3 still computes every wait (backoff, jitter, `Retry-After` capped at RETRY_AFTER_MAX): only the
    sleeping is done on an Event, so that a SIGTERM acts within a moment, not after the server's Retry-After.
    """

    stop: threading.Event | None = None

    def new(self, **kw: Any) -> Retry:
        retry = super().new(**kw)
        retry.stop = self.stop  # type: ignore[attr-defined]
        return retry

    def increment(self, *args: Any, **kwargs: Any) -> Retry:
        try:
            return super().increment(*args, **kwargs)
        except MaxRetryError as exc:
            exc.retry_history = self.history  # type: ignore[attr-defined]
            raise

    def sleep_for_retry(self, response: Any) -> bool:
        seconds = self.get_retry_after(response)
        if not seconds:
            return False
        asked = response.headers.get("Retry-After")
        self._wait(seconds, response, status=response.status, retry_after=asked)
        return True

    def sleep(self, response: Any = None) -> None:
        if self.respect_retry_after_header and response and self.sleep_for_retry(response):
            return
        self._wait(self.get_backoff_time(), response, status=getattr(response, "status", None))

    def _wait(self, seconds: float, response: Any, **said: Any) -> None:
        if seconds <= 0:
            return
        last = self.history[-1] if self.history else None
        if seconds >= LOUD_WAIT:
            _log.warning("retry_wait", seconds=round(seconds, 1), method=getattr(last, "method", None), **said)
        stop = self.stop
        if stop is None:
            threading.Event().wait(seconds)
        elif stop.wait(seconds):
            raise RetryStopped(response, getattr(last, "error", None), self.history)


class _PostRetry(_Retry, ContinueRetry):
    """The POST policy: ContinueRetry's refusal to repeat a body the handler read, with _Retry's waits."""


def _retry(
    method: str, retries: int, backoff: float, *, read: int, policy: type[_Retry] = _Retry,
    stop: threading.Event | None = None,
) -> Retry:
    """The shared shape of both policies: they differ only in their method and in whether a read error is retried."""
    retry = policy(
        total=retries,
        connect=retries,
        read=read,
        status=retries,
        other=0,
        allowed_methods=frozenset({method}),
        status_forcelist=RETRIED_STATUSES,
        backoff_factor=backoff,
        backoff_max=2.0,
        backoff_jitter=backoff,
        respect_retry_after_header=True,
        retry_after_max=RETRY_AFTER_MAX,
        raise_on_status=False,  # hand back the last answer so its status is what gets journaled
    )
    retry.stop = stop
    return retry


def get_retry(retries: int, backoff: float, stop: threading.Event | None = None) -> Retry:
    """GETs are idempotent: retry 5xx, refused connections, read timeouts (stalls) and dropped connections."""
    return _retry("GET", retries, backoff, read=retries, stop=stop)


def post_retry(retries: int, backoff: float, stop: threading.Event | None = None) -> Retry:
    """POSTs are re-sent only when the API surely did not handle them: a failed connect, a withheld body, or a
    5xx answer the handler gave without reading the body.

    A read timeout or a connection dropped after sending (`read=0`) is never re-sent: the API may have
    delivered the batch, so the caller marks it in doubt instead of risking a double delivery. Nor is a 5xx
    given after `100 Continue` (`ContinueRetry`): the handler read that batch.
    """
    return _retry("POST", retries, backoff, read=0, policy=_PostRetry, stop=stop)
