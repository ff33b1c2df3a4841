"""Per-shard write limits: token buckets for records/s and bytes/s, a rolling-window guard, and AIMD.

Kinesis counts each shard's writes (1,000 records/s and 1 MiB/s by default) over rolling one-second
windows. A plain token bucket with one second of burst at the full rate lets up to twice the limit into
one window (a full bucket plus a second of refill), so the limiter here combines:

- buckets refilling at TARGET_FRACTION of the limit, BURST_S deep: the long-run pace, a little under the
  limit to absorb clock and arrival jitter, with room for a full request after a pause;
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
# Bucket depth, in seconds of the current pace. The window guard, not the depth, keeps each second under
# the limit, so the depth can be generous: after a pause one full PutRecords (500 entries of ~1 KB) to one
# shard goes at once, and ordered mode (one request in flight per shard) keeps pace with long round trips.
# Deeper buckets gained ~0.5 % of goodput in the simulations but met more throttles when arrival times
# jitter by more than GUARD_S, since a violation then refuses a bigger burst.
BURST_S = 0.55
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
        self._limit_records = float(records_per_s)
        self._limit_bytes = float(bytes_per_s)
        self._adaptive = adaptive
        self._clock = clock
        self._lock = threading.Lock()
        self._throttled_at_fraction = 1.0  # the level the last throttle happened at
        self._set_fraction(1.0)
        now = clock()
        self._tokens_records, self._tokens_bytes = self._cap_records, self._cap_bytes
        self._refilled_at = now
        self._sends: deque[tuple[float, int, int]] = deque()  # (time, records, bytes) within the guarded window
        self._window_records = 0  # sums of _sends
        self._window_bytes = 0
        self._last_cut = -math.inf
        self._last_increase = now

    # --- the budget -----------------------------------------------------------------------------

    def available(self) -> tuple[float, float]:
        """(records, bytes) that may go now."""
        with self._lock:
            self._advance(self._clock())
            return (
                max(0.0, min(self._tokens_records, self._window_limit_records - self._window_records)),
                max(0.0, min(self._tokens_bytes, self._window_limit_bytes - self._window_bytes)),
            )

    def spend(self, records: int, size: int) -> None:
        """Count `records` entries of `size` bytes in total as sent now (it may overdraw: see the class)."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            self._tokens_records -= records
            self._tokens_bytes -= size
            self._sends.append((now, records, size))
            self._window_records += records
            self._window_bytes += size

    def refund(self, records: int, size: int) -> None:
        """Give back what a spend sent nowhere (refused before sending, e.g. botocore's validation, or a
        connection refused): the shard never counted it. Not for requests that may have arrived."""
        with self._lock:
            self._advance(self._clock())
            self._tokens_records = min(self._cap_records, self._tokens_records + records)
            self._tokens_bytes = min(self._cap_bytes, self._tokens_bytes + size)
            # Taken off the latest sends: the refunded one, or one a few ms younger (the window frees that
            # much earlier, well within GUARD_S).
            sends = self._sends
            while sends and (records > 0 or size > 0):
                sent_at, sent_records, sent_bytes = sends.pop()
                back_records, back_bytes = min(records, sent_records), min(size, sent_bytes)
                records, size = records - back_records, size - back_bytes
                self._window_records -= back_records
                self._window_bytes -= back_bytes
                if sent_records > back_records or sent_bytes > back_bytes:
                    sends.append((sent_at, sent_records - back_records, sent_bytes - back_bytes))
                    break

    def delay_for(self, records: int, size: int) -> float:
        """Seconds until `records` entries of `size` bytes may go (0 = now), amounts clamped as the class says."""
        with self._lock:
            now = self._clock()
            self._advance(now)
            # The bucket can never hold more than its depth, the window never more than the limit.
            wait = max(
                (min(records, self._cap_records) - self._tokens_records) / self._rate_records,
                (min(size, self._cap_bytes) - self._tokens_bytes) / self._rate_bytes,
                self._window_wait(now, min(records, self._window_limit_records), min(size, self._window_limit_bytes)),
            )
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
            self._set_fraction(max(MIN_FRACTION, level * (GENTLE_DECREASE_FACTOR if near else DECREASE_FACTOR)))
            self._last_cut = now
            self._last_increase = now
            self._tokens_records = min(self._tokens_records, self._cap_records)
            self._tokens_bytes = min(self._tokens_bytes, self._cap_bytes)

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
            if level >= 1.0:
                return
            if level < at * RECOVERY_FRACTION:
                raised = min(at * RECOVERY_FRACTION, level + FAST_INCREASE_PER_S * step)
            elif level < at * PROBE_BAND:
                raised = min(at * PROBE_BAND, level + PROBE_INCREASE_PER_S * step)
            else:
                raised = level + NORMAL_INCREASE_PER_S * step
            self._set_fraction(min(1.0, raised))

    @property
    def rate(self) -> tuple[float, float]:
        """The current long-run pace (records/s, bytes/s)."""
        return (self._rate_records, self._rate_bytes)

    @property
    def fraction(self) -> float:
        """The allowed share of the configured limit (1.0 until throttled)."""
        return self._fraction

    # --- internals (called with the lock held) --------------------------------------------------

    def _set_fraction(self, fraction: float) -> None:
        """Move the level, and what derives from it (computed here once, not on every call)."""
        self._fraction = fraction
        self._rate_records = self._limit_records * fraction * TARGET_FRACTION
        self._rate_bytes = self._limit_bytes * fraction * TARGET_FRACTION
        self._cap_records = self._rate_records * BURST_S
        self._cap_bytes = self._rate_bytes * BURST_S
        self._window_limit_records = self._limit_records * fraction
        self._window_limit_bytes = self._limit_bytes * fraction

    def _advance(self, now: float) -> None:
        """Refill the buckets and drop sends older than the guarded window."""
        elapsed = now - self._refilled_at
        if elapsed > 0:
            self._tokens_records = min(self._cap_records, self._tokens_records + self._rate_records * elapsed)
            self._tokens_bytes = min(self._cap_bytes, self._tokens_bytes + self._rate_bytes * elapsed)
            self._refilled_at = now
        sends = self._sends
        if sends:
            horizon = now - (WINDOW_S + GUARD_S) + TIME_EPSILON_S
            while sends and sends[0][0] <= horizon:
                _, records, size = sends.popleft()
                self._window_records -= records
                self._window_bytes -= size

    def _window_wait(self, now: float, records: float, size: float) -> float:
        """Seconds until enough sends leave the guarded window for `records` entries of `size` bytes to fit."""
        over_records = self._window_records + records - self._window_limit_records
        over_bytes = self._window_bytes + size - self._window_limit_bytes
        if over_records <= 0 and over_bytes <= 0:
            return 0.0
        for sent_at, sent_records, sent_bytes in self._sends:
            over_records -= sent_records
            over_bytes -= sent_bytes
            if over_records <= 0 and over_bytes <= 0:
                return sent_at + WINDOW_S + GUARD_S - now
        return WINDOW_S + GUARD_S  # unreachable: an empty window holds any clamped amount
