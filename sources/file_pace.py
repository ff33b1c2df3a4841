"""Replay at the original pace: records are spaced as their timestamps were, divided by a speed factor.

The first record with a readable timestamp sets the origin; each later one is due at
`origin_clock + (timestamp - origin_timestamp) / speed`. Records whose timestamp lies before one already
sent are due at once (no reordering, no waiting backwards). Records without a readable timestamp are sent
at once and counted by the caller: they are fine records, only unpaced.

Readable timestamps: numbers (and numeric strings) in epoch seconds, or epoch milliseconds when above
`_EPOCH_MS_THRESHOLD`; ISO-8601 strings (`2026-01-02T03:04:05.678Z`, offsets allowed, naive means UTC);
and X v1.1's `Wed Oct 10 20:19:24 +0000 2018`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# 1e11 s is the year 5138; 1e11 ms is 1973. Above it, a number is milliseconds.
_EPOCH_MS_THRESHOLD = 1e11
_V1_FORMAT = "%a %b %d %H:%M:%S %z %Y"


def field_value(event: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(event, dict):
            return None
        event = event.get(key)
    return event


def parse_timestamp(value: Any) -> float | None:
    """Epoch seconds of `value`, or None when it is not a readable timestamp. Never raises."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            return _parse_date(text)
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            return None
        return seconds / 1000 if abs(seconds) > _EPOCH_MS_THRESHOLD else seconds
    return None


def _parse_date(text: str) -> float | None:
    for parse in (datetime.fromisoformat, lambda t: datetime.strptime(t, _V1_FORMAT)):
        try:
            moment = parse(text)
        except (ValueError, OverflowError):
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            return moment.timestamp()
        except (ValueError, OverflowError, OSError):
            return None
    return None


class Pacer:
    """How long to wait before each record so the replay keeps the original spacing, sped up by `speed`."""

    def __init__(self, field: str, speed: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = field.split(".")
        self.speed = speed
        self.clock = clock
        self._origin: tuple[float, float] | None = None  # (timestamp, clock) of the first paced record

    def restart(self) -> None:
        """A new pass (loop): the next timestamp becomes the origin again."""
        self._origin = None

    def delay(self, event: Any) -> float | None:
        """Seconds until `event` is due (<= 0: now), or None when it has no readable timestamp."""
        stamp = parse_timestamp(field_value(event, self.path))
        if stamp is None:
            return None
        now = self.clock()
        if self._origin is None:
            self._origin = (stamp, now)
            return 0.0
        origin_stamp, origin_clock = self._origin
        return origin_clock + (stamp - origin_stamp) / self.speed - now
