"""The rate-limited log: one line per key and interval, and the count of what it held back."""

from __future__ import annotations

from typing import Any

from daemon.logs import RateLimitedLog


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_then_the_count_of_held_back_lines() -> None:
    """Within an interval only the first line passes; the next passing line reports how many were held back."""
    clock = _Clock()
    limiter = RateLimitedLog(10.0, clock=clock)
    lines: list[dict[str, Any]] = []

    def log(event: str, **fields: Any) -> None:
        lines.append({"event": event, **fields})

    assert limiter.emit("k", log, "flood", n=1)
    for n in range(2, 6):
        assert not limiter.emit("k", log, "flood", n=n)
    clock.now += 10.0
    assert limiter.emit("k", log, "flood", n=6)
    assert lines == [{"event": "flood", "n": 1}, {"event": "flood", "n": 6, "suppressed_since_last": 4}]


def test_keys_are_limited_independently() -> None:
    """A flood under one key does not hold back the first line of another."""
    limiter = RateLimitedLog(10.0, clock=_Clock())
    assert limiter.allow("a") == 0
    assert limiter.allow("a") is None
    assert limiter.allow("b") == 0
