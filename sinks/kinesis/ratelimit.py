"""Placeholder (the SHARDS helper's module replaces it): per-shard token buckets for records/s and bytes/s."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# A bucket holds one second's worth: a burst never exceeds what a shard takes in a second.
_BURST_S = 1.0
_MIN_FRACTION = 0.1  # multiplicative decrease never goes below this share of the configured rate
_DECREASE = 0.5
_INCREASE_FRACTION = 0.01  # of the maximum, per accepted entry batch


class ShardLimiter:
    def __init__(self, records_per_s: float, bytes_per_s: float, *, adaptive: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._max = (records_per_s, bytes_per_s)
        self._rate = [records_per_s, bytes_per_s]
        self._adaptive = adaptive
        self._clock = clock
        self._tokens = [records_per_s * _BURST_S, bytes_per_s * _BURST_S]
        self._at = clock()
        self._lock = threading.Lock()

    def _fill(self) -> None:
        now = self._clock()
        elapsed, self._at = now - self._at, now
        for i in (0, 1):
            self._tokens[i] = min(self._rate[i] * _BURST_S, self._tokens[i] + elapsed * self._rate[i])

    def available(self) -> tuple[float, float]:
        with self._lock:
            self._fill()
            return (max(0.0, self._tokens[0]), max(0.0, self._tokens[1]))

    def spend(self, records: int, size: int) -> None:
        with self._lock:
            self._fill()
            self._tokens[0] -= records
            self._tokens[1] -= size

    def delay_for(self, records: int, size: int) -> float:
        with self._lock:
            self._fill()
            need_r = min(records, self._rate[0] * _BURST_S) - self._tokens[0]
            need_b = min(size, self._rate[1] * _BURST_S) - self._tokens[1]
            return max(0.0, need_r / self._rate[0], need_b / self._rate[1])

    def throttled(self) -> None:
        if not self._adaptive:
            return
        with self._lock:
            for i in (0, 1):
                self._rate[i] = max(self._max[i] * _MIN_FRACTION, self._rate[i] * _DECREASE)

    def succeeded(self, records: int) -> None:
        if not self._adaptive or records <= 0:
            return
        with self._lock:
            for i in (0, 1):
                self._rate[i] = min(self._max[i], self._rate[i] + self._max[i] * _INCREASE_FRACTION)

    @property
    def rate(self) -> tuple[float, float]:
        return (self._rate[0], self._rate[1])
