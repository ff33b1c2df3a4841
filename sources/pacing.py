"""Pacing shared by the sources: a schedule-based rate limiter that holds its rate over time.

The limiter is a virtual schedule (GCRA, the generic cell rate algorithm): record k is due one interval
after record k-1 was *due*, not after it was sent, so a sleep that wakes late does not slow the rate down
as long as the lateness fits in the `burst` allowance; the next records simply go without waiting until
the schedule is met again. Lateness beyond the allowance (a sink that blocked for a while) is forgiven, not
made up: at most `burst` records go back to back. With `burst=1` records are spaced strictly, and every late
wake-up is lost time (the rate then runs a little under its target).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

# How often a waiting limiter re-checks the stop flag (ctx.wait returns early on stop anyway).
RATE_WAIT_SLICE_S = 0.5
# The automatic burst lets the schedule absorb this much lateness (a late timer, a short sink stall) without
# losing rate; at least 2 records, so even a slow rate is held when a wake-up comes late.
AUTO_BURST_WINDOW_S = 0.05
AUTO_BURST_MIN = 2
AUTO_BURST_MAX = 100_000


def auto_burst(rate: float) -> int:
    """The burst allowance for `rate` records/s: what it makes in AUTO_BURST_WINDOW_S, within bounds."""
    return min(AUTO_BURST_MAX, max(AUTO_BURST_MIN, math.ceil(rate * AUTO_BURST_WINDOW_S)))


class _Stoppable(Protocol):
    @property
    def stopping(self) -> bool: ...

    def wait(self, seconds: float) -> bool: ...


class RateLimiter:
    """At most `rate` records per second on average, at most `burst` back to back; `rate` 0 = no limit.

    The schedule starts empty: the first record goes at once, the next ones one interval apart; the
    `burst` allowance is only ever used to catch up.
    """

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.interval = 1.0 / rate if rate > 0 else 0.0
        # How far ahead of now the schedule may run before a record has to wait.
        self.tolerance = (burst - 1) * self.interval
        self._clock = clock
        self.next_at = clock() + self.tolerance

    def wait(self, ctx: _Stoppable) -> bool:
        """Wait for the next slot; returns False when the daemon is stopping."""
        if not self.interval:
            return not ctx.stopping
        now = self._clock()
        earliest = self.next_at - self.tolerance
        while earliest > now:
            if ctx.wait(min(earliest - now, RATE_WAIT_SLICE_S)):
                return False
            now = self._clock()
        self.next_at = max(self.next_at, now) + self.interval
        return True
