"""The retry policies as values: one urllib3 `Retry` for GETs, another for POSTs, named and configured, not
re-implemented.

GETs are idempotent and retried on every transient failure; a POST is re-sent only when the API surely did not
handle it (see `post_retry`).
"""

from __future__ import annotations

from typing import Any

from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from .continue100 import ContinueRetry

__all__ = ["RETRIED_STATUSES", "get_retry", "post_retry"]

RETRIED_STATUSES = frozenset({500, 502, 503, 504})
RETRY_AFTER_MAX = 30  # seconds: honour Retry-After, but never let one answer park a worker for hours


class _Retry(Retry):
    """urllib3's Retry, except that a spent budget's MaxRetryError keeps the history of the retries it made.

    Without it a GET that finally fails would hide its retries from the counters (urllib3 drops the history).
    """

    def increment(self, *args: Any, **kwargs: Any) -> Retry:
        try:
            return super().increment(*args, **kwargs)
        except MaxRetryError as exc:
            exc.retry_history = self.history  # type: ignore[attr-defined]
            raise


def _retry(method: str, retries: int, backoff: float, *, read: int, policy: type[Retry] = _Retry) -> Retry:
    """The shared shape of both policies: they differ only in their method and in whether a read error is retried."""
    return policy(
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


def get_retry(retries: int, backoff: float) -> Retry:
    """GETs are idempotent: retry 5xx, refused connections, read timeouts (stalls) and dropped connections."""
    return _retry("GET", retries, backoff, read=retries)


def post_retry(retries: int, backoff: float) -> Retry:
    """POSTs are re-sent only when the API surely did not handle them: a failed connect, a withheld body, or a
    5xx answer the handler gave without reading the body.

    A read timeout or a connection dropped after sending (`read=0`) is never re-sent: the API may have
    delivered the batch, so the caller marks it in doubt instead of risking a double delivery. Nor is a 5xx
    given after `100 Continue` (`ContinueRetry`): the handler read that batch.
    """
    return _retry("POST", retries, backoff, read=0, policy=ContinueRetry)
