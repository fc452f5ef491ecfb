"""When to hedge a stream's first part (issue 30, SPEC §5j), as values with no I/O.

    HedgeBudget       the share of requests that may be hedged over a sliding minute
                      (PROXY_HEDGE_BUDGET), so a slow fleet is not sent twice the load
    FirstPartTimes    a model's recent times from an attempt's request to its first part,
                      whose p90 is `hedge_after: auto` (between a floor and a ceiling)

A hedge is a second attempt at the same request on another replica, started when the first
has produced no part by `hedge_after`; the race itself is the relay's (proxy/hedge.py).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Literal

# `auto` hedges at the p90 of the last SAMPLES first-part times, once MIN_SAMPLES are known,
# never before AUTO_FLOOR (below it a hedge races the network's noise, not a slow replica)
# and never after AUTO_CEILING (past it the wait is the tail that hedging exists to cut).
SAMPLES = 100
MIN_SAMPLES = 20
AUTO_PERCENTILE = 0.9
AUTO_FLOOR = 0.2
AUTO_CEILING = 10.0
BUDGET_WINDOW = 60.0


class FirstPartTimes:
    """A model's recent seconds to a first part, each from its attempt's request."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=SAMPLES)

    def observe(self, seconds: float) -> None:
        self._times.append(seconds)

    def hedge_after(self, setting: float | Literal["auto"] | None) -> float | None:
        """Seconds before a hedge under this setting; None: no hedge (off, or `auto` while
        too little is known)."""
        if setting != "auto":
            return setting
        if len(self._times) < MIN_SAMPLES:
            return None
        ordered = sorted(self._times)
        p90 = ordered[min(len(ordered) - 1, math.ceil(AUTO_PERCENTILE * len(ordered)) - 1)]
        return min(max(p90, AUTO_FLOOR), AUTO_CEILING)


class HedgeBudget:
    """Hedges may be at most `share` of the requests of the last minute, and one at least
    when the share is not 0 (a quiet proxy may hedge its one slow request)."""

    __slots__ = ("_clock", "_hedges", "_requests", "share")

    def __init__(self, share: float, clock: Callable[[], float]) -> None:
        self.share = share
        self._clock = clock
        self._requests: deque[float] = deque()
        self._hedges: deque[float] = deque()

    def requested(self) -> None:
        self._requests.append(self._clock())

    def try_hedge(self) -> bool:
        """Take one hedge from the budget, if there is room."""
        if self.share <= 0:
            return False
        now = self._clock()
        for times in (self._requests, self._hedges):
            while times and times[0] <= now - BUDGET_WINDOW:
                times.popleft()
        if len(self._hedges) >= max(1.0, self.share * len(self._requests)):
            return False
        self._hedges.append(now)
        return True
