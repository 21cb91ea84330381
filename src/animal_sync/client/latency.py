"""The GET read timeout, drawn from the answers seen so far: a stalled GET is cut as soon as it is surely stalled.

The API stalls about 1 request in 100 for 5-15 s before handling it; a normal answer takes milliseconds.
A fixed 1 s cut holds a worker for the whole second on every stall (about 60 a run); a cut at a few times
the high percentile of observed answer times holds it for a fraction of that, and still never cuts a
normal answer, since it follows the machine's and the network's own pace. Until enough answers are seen,
and whenever they turn slow, the cut stays at the configured ceiling (`--get-timeout`).

A cut try is no answer, so it cannot move the percentile: if the API's pace jumps above the cut (a loaded server,
a slower network), every try would be cut and none would ever teach the cut otherwise. So the tries that were cut
are counted too: when a tenth of the recent tries were cut (stalls alone are about 1 in 100), the cut is raised
FACTOR-fold, as often as it takes, up to the ceiling. Counting a cut try as a sample at the cut would do the same
but also let the ordinary 1 % of stalls sit at the p99 and push the cut up for nothing.
"""

from __future__ import annotations

import threading
from collections import deque

__all__ = ["AdaptiveCut"]

WINDOW = 1000  # recent answers the percentile is taken over: follows a change of pace within a second or two
MIN_SAMPLES = 100  # below this the percentile says little: keep the ceiling
RECOMPUTE_EVERY = 50  # answers between two percentile computations (sorting the window each time costs CPU)
QUANTILE = 0.99
FACTOR = 4.0  # the cut is this many times the percentile: well clear of a normal answer's spread
RECENT_TRIES = 100  # tries (answered or cut) over which the share of cut ones is judged
CUTS_TO_RAISE = 10  # that many cut among them: the pace, not stalls (~1 in 100), is above the cut; raise it


class AdaptiveCut:
    """A thread-safe read timeout: FACTOR x the QUANTILE of recent answer times, within [floor, ceiling]."""

    def __init__(self, floor: float, ceiling: float) -> None:
        self.floor = min(floor, ceiling)
        self.ceiling = ceiling
        self._samples: deque[float] = deque(maxlen=WINDOW)
        self._lock = threading.Lock()
        self._since = 0
        self._seconds = ceiling
        self._recent: deque[bool] = deque(maxlen=RECENT_TRIES)  # True: that try was cut
        self._recent_cuts = 0
        self.raised = 0  # times repeated cuts raised the cut (for tests and figures)

    @property
    def seconds(self) -> float:
        """The read timeout to use for the next GET."""
        return self._seconds

    def observe(self, seconds: float) -> None:
        """Record how long one try waited for its answer's headers (a try that was cut is not an answer)."""
        if self.floor >= self.ceiling:
            return  # adapting is switched off: nothing to learn
        with self._lock:
            self._remember(cut=False)
            self._samples.append(seconds)
            self._since += 1
            if self._since < RECOMPUTE_EVERY or len(self._samples) < MIN_SAMPLES:
                return
            self._since = 0
            ordered = sorted(self._samples)
            high = ordered[min(len(ordered) - 1, int(QUANTILE * len(ordered)))]
            self._seconds = min(self.ceiling, max(self.floor, FACTOR * high))

    def cut(self) -> None:
        """Record a try that was cut at this timeout: enough of them among the recent tries raise it."""
        if self.floor >= self.ceiling:
            return
        with self._lock:
            self._remember(cut=True)
            if self._recent_cuts < CUTS_TO_RAISE or self._seconds >= self.ceiling:
                return
            self._seconds = min(self.ceiling, FACTOR * self._seconds)
            self._recent.clear()  # the next raise needs fresh evidence, gathered under the new cut
            self._recent_cuts = 0
            # The percentile is next taken after RECOMPUTE_EVERY answers under the raised cut: by then the new pace
            # is 5 % of the window or more, so it holds the p99 and the cut cannot fall back below it at once.
            self._since = 0
            self.raised += 1

    def _remember(self, *, cut: bool) -> None:
        if len(self._recent) == RECENT_TRIES:
            self._recent_cuts -= self._recent[0]
        self._recent.append(cut)
        self._recent_cuts += cut
