"""A run's first contact: that the API answers at all, before a run is begun or resumed in the journal.

A wrong URL must not leave a half-begun run that blocks the corrected one, nor be called an API that "stopped
answering": it never answered. So a run asks `GET /` first (chaos-free on the real server), again and again
for a few seconds while no connection opens, telling its caller each second how long it keeps trying.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..client.api import AnimalsApi, ApiUnreachable
from ..config import Settings
from ..errors import ApiNotReached
from ..urls import redact_url

__all__ = ["FIRST_CONTACT_SECONDS", "Unanswered", "reach"]

FIRST_CONTACT_SECONDS = 10.0  # how long a first contact keeps trying: about one GET's whole retry budget


@dataclass(frozen=True)
class Unanswered:
    """The API has not answered yet: where, why not, and how much longer the first contact keeps trying."""

    url: str
    cause: str
    seconds_left: float


def reach(
    settings: Settings,
    *,
    within: float | None = None,
    stop: threading.Event | None = None,
    on_waiting: Callable[[Unanswered], None] | None = None,
) -> None:
    """Return once the API answers anything; ApiNotReached after `within` seconds (or a stop) with no connection."""
    within = FIRST_CONTACT_SECONDS if within is None else within
    url = redact_url(settings.base_url)
    stop = stop or threading.Event()
    if stop.is_set():
        return  # a stop asked before the first contact: the attempt stops at once, and sends nothing at all
    started = time.monotonic()
    api = AnimalsApi(settings)
    try:
        pause = 0.25
        while True:
            try:
                api.greet()
                return
            except ApiUnreachable as exc:
                cause = str(exc)
            next_try = time.monotonic() + pause
            while True:
                left = within - (time.monotonic() - started)
                if left <= 0 or stop.is_set():
                    raise ApiNotReached(url, cause, time.monotonic() - started)
                if on_waiting is not None:
                    on_waiting(Unanswered(url, cause, left))
                wait = min(1.0, left, next_try - time.monotonic())
                if wait <= 0:
                    break
                stop.wait(wait)
            pause = min(pause * 2, 2.0)
    finally:
        api.close()
