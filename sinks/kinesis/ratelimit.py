"""Per-shard write limits: token buckets for records/s and bytes/s, a rolling-window guard, and AIMD.

Kinesis counts each shard's writes (1,000 records/s and 1 MiB/s by default) over rolling one-second
windows. A plain token bucket with one second of burst at the full rate lets up to twice the limit into
one window (a full bucket plus a second of refill), so the limiter here combines:

- buckets refilling at TARGET_FRACTION of the limit, BURST_S deep: the long-run pace, a little under the
  limit to absorb clock and arrival jitter;
- a guard over the sends of the last WINDOW_S + GUARD_S seconds that never lets them exceed the limit: a
  burst is allowed only when the past second was light, so no one-second window at the shard sees more
  than the limit as long as arrival times shift by less than GUARD_S;
- adaptation (AIMD) for a shard whose real limit is lower than configured (shared with other producers,
  or a lower limit): `throttled()` cuts the allowed fraction multiplicatively (at most once per
  CUT_SPACING_S, so the refusals of one burst count once), `succeeded()` raises it again additively: fast
  back to just under the level that was throttled, slowly around it, then at a normal pace to the maximum.

Pure (no sleeping, no I/O) and clock-injected; a lock makes it safe to share between the scheduler and
the threads that report answers.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

# Long-run pace as a fraction of the limit: 3 % of headroom for jitter between our clock and the shard's.
TARGET_FRACTION = 0.97
# Bucket depth, in seconds of the current pace: lets a batch form while a request is in flight (ordered
# mode keeps one request per shard in flight, so the depth must exceed a round trip).
BURST_S = 0.25
# Kinesis's accounting window, and the extra length the guard covers: sends whose arrival at the shard
# moves by up to GUARD_S still fall in one guarded window.
WINDOW_S = 1.0
GUARD_S = 0.02
# Adaptation.
DECREASE_FACTOR = 0.7  # a throttle cuts the allowed fraction to 70 %
# ... but to 90 % when it comes while probing near the level the previous throttle came at: the limit is
# known there, and a deep cut would waste capacity at every probe. A throttle below that band cuts deep.
GENTLE_DECREASE_FACTOR = 0.9
MIN_FRACTION = 0.1  # never below 10 % of the configured limit
CUT_SPACING_S = 0.1  # refusals within 100 ms of a cut are the same burst: one cut
RECOVERY_FRACTION = 0.95  # below 95 % of the last throttled level: climb fast
FAST_INCREASE_PER_S = 0.5  # fractions of the limit per second, by phase
PROBE_INCREASE_PER_S = 0.02
PROBE_BAND = 1.05  # probing slowly up to 5 % above the last throttled level, then the normal pace
NORMAL_INCREASE_PER_S = 0.1
MAX_INCREASE_STEP_S = 1.0  # one success after a long pause raises the level by at most 1 s worth
# Float slack: a caller that waits exactly what delay_for said must then get 0, not 1e-16 (and a second wait).
TIME_EPSILON_S = 1e-9


class ShardLimiter:
    """One shard's budget. The scheduler asks `available()` / `delay_for()`, `spend()`s what it sends, and
    reports answers with `throttled()` / `succeeded()`.

    Amounts larger than a full bucket are clamped to it: such a request may go when the bucket is full and
    the window has room for it (or is empty, if it exceeds even the limit), and its excess becomes a debt
    later sends wait for. `available()` never covers such an entry, so the scheduler's rule is: take the
    entries that fit in `available()`; if none fits, send the first one alone once `delay_for` says 0.
    """

    def __init__(
        self,
        records_per_s: float,
        bytes_per_s: float,
        *,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (records_per_s > 0 and bytes_per_s > 0 and math.isfinite(records_per_s) and math.isfinite(bytes_per_s)):
            raise ValueError(f"shard limits must be positive and finite, not {records_per_s} records/s, {bytes_per_s} bytes/s")
        self._limit = (float(records_per_s), float(bytes_per_s))
        self._adaptive = adaptive
        self._clock = clock
        self._lock = threading.Lock()
        self._fraction = 1.0  # of the configured limit, moved by AIMD
        self._throttled_at_fraction = 1.0  # the level the last throttle happened at
        now = clock()
        self._tokens = [self._limit[0] * TARGET_FRACTION * BURST_S, self._limit[1] * TARGET_FRACTION * BURST_S]
        self._refilled_at = now
        self._sends: deque[tuple[float, int, int]] = deque()  # (time, records, bytes) within the guarded window
        self._window = [0, 0]  # sums of _sends
        self._last_cut = -math.inf
        self._last_increase = now

    # --- the budget -----------------------------------------------------------------------------

    def available(self) -> tuple[float, float]:
        """(records, bytes) that may go now."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            room = self._window_room()
            return (max(0.0, min(self._tokens[0], room[0])), max(0.0, min(self._tokens[1], room[1])))

    def spend(self, records: int, size: int) -> None:
        """Count `records` entries of `size` bytes in total as sent now (it may overdraw: see the class)."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            self._tokens[0] -= records
            self._tokens[1] -= size
            self._sends.append((now, records, size))
            self._window[0] += records
            self._window[1] += size

    def delay_for(self, records: int, size: int) -> float:
        """Seconds until `records` entries of `size` bytes may go (0 = now), amounts clamped as the class says."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            rates = self._rates()
            caps = (rates[0] * BURST_S, rates[1] * BURST_S)
            limits = self._window_limits()
            # The bucket can never hold more than its depth, the window never more than the limit.
            bucket_need = (min(records, caps[0]), min(size, caps[1]))
            window_need = (min(records, limits[0]), min(size, limits[1]))
            bucket_wait = max((bucket_need[i] - self._tokens[i]) / rates[i] for i in (0, 1))
            wait = max(bucket_wait, self._window_wait(now, window_need, limits))
            return wait if wait > TIME_EPSILON_S else 0.0

    # --- adaptation ------------------------------------------------------------------------------

    def throttled(self) -> None:
        """A throttling refusal from this shard: cut the pace (once per burst of refusals)."""
        if not self._adaptive:
            return
        with self._lock:
            now = self._clock()
            if now - self._last_cut < CUT_SPACING_S:
                return
            self._advance(now)
            level = self._fraction
            near = self._throttled_at_fraction * RECOVERY_FRACTION <= level <= self._throttled_at_fraction * PROBE_BAND
            self._throttled_at_fraction = level
            self._fraction = max(MIN_FRACTION, level * (GENTLE_DECREASE_FACTOR if near else DECREASE_FACTOR))
            self._last_cut = now
            self._last_increase = now
            self._clamp_tokens()

    def succeeded(self, records: int) -> None:
        """`records` entries accepted by this shard: raise the pace towards the configured maximum."""
        if not self._adaptive or records <= 0:
            return
        with self._lock:
            now = self._clock()
            self._advance(now)
            step = min(max(0.0, now - self._last_increase), MAX_INCREASE_STEP_S)
            self._last_increase = now
            level, at = self._fraction, self._throttled_at_fraction
            if level < at * RECOVERY_FRACTION:
                raised = min(at * RECOVERY_FRACTION, level + FAST_INCREASE_PER_S * step)
            elif level < at * PROBE_BAND:
                raised = min(at * PROBE_BAND, level + PROBE_INCREASE_PER_S * step)
            else:
                raised = level + NORMAL_INCREASE_PER_S * step
            self._fraction = min(1.0, raised)

    @property
    def rate(self) -> tuple[float, float]:
        """The current long-run pace (records/s, bytes/s)."""
        with self._lock:
            return self._rates()

    @property
    def fraction(self) -> float:
        """The allowed share of the configured limit (1.0 until throttled)."""
        return self._fraction

    # --- internals (called with the lock held) --------------------------------------------------

    def _rates(self) -> tuple[float, float]:
        return (self._limit[0] * self._fraction * TARGET_FRACTION, self._limit[1] * self._fraction * TARGET_FRACTION)

    def _window_limits(self) -> tuple[float, float]:
        return (self._limit[0] * self._fraction, self._limit[1] * self._fraction)

    def _window_room(self) -> tuple[float, float]:
        limits = self._window_limits()
        return (limits[0] - self._window[0], limits[1] - self._window[1])

    def _advance(self, now: float) -> None:
        """Refill the buckets and drop sends older than the guarded window."""
        elapsed = now - self._refilled_at
        if elapsed > 0:
            rates = self._rates()
            self._tokens[0] = min(rates[0] * BURST_S, self._tokens[0] + rates[0] * elapsed)
            self._tokens[1] = min(rates[1] * BURST_S, self._tokens[1] + rates[1] * elapsed)
            self._refilled_at = now
        horizon = now - (WINDOW_S + GUARD_S) + TIME_EPSILON_S
        sends = self._sends
        while sends and sends[0][0] <= horizon:
            _, records, size = sends.popleft()
            self._window[0] -= records
            self._window[1] -= size

    def _clamp_tokens(self) -> None:
        rates = self._rates()
        self._tokens[0] = min(self._tokens[0], rates[0] * BURST_S)
        self._tokens[1] = min(self._tokens[1], rates[1] * BURST_S)

    def _window_wait(self, now: float, need: tuple[float, float], limits: tuple[float, float]) -> float:
        """Seconds until enough sends leave the guarded window for `need` to fit in it."""
        over = [self._window[i] + need[i] - limits[i] for i in (0, 1)]
        if over[0] <= 0 and over[1] <= 0:
            return 0.0
        for sent_at, records, size in self._sends:
            over[0] -= records
            over[1] -= size
            if over[0] <= 0 and over[1] <= 0:
                return sent_at + WINDOW_S + GUARD_S - now
        return WINDOW_S + GUARD_S  # unreachable: an empty window holds any clamped need
