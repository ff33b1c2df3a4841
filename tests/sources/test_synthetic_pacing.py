"""The shared rate limiter (sources/pacing.py) on a virtual clock: no drift from late wake-ups, bounded bursts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sources.pacing import RateLimiter

RATE = 100.0
INTERVAL = 1 / RATE
RECORDS = 1000


@dataclass
class VirtualTime:
    """A clock that moves only when the limiter waits, each wait waking `lateness` of an interval late."""

    now: float = 1000.0
    lateness: float = 0.0
    waits: int = 0
    stopping: bool = False

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits += 1
        self.now += seconds + self.lateness * INTERVAL
        return False


def paced(limiter: RateLimiter, time: VirtualTime, records: int) -> list[float]:
    sent = []
    for _ in range(records):
        assert limiter.wait(time)
        sent.append(time.now)
    return sent


def test_late_wake_ups_do_not_slow_the_rate_with_a_burst_allowance() -> None:
    """Every wait wakes 30 % of an interval late, yet 1,000 records take 1,000 intervals (within one)."""
    time = VirtualTime(lateness=0.3)
    sent = paced(RateLimiter(RATE, burst=2, clock=time.clock), time, RECORDS)
    assert sent[-1] - sent[0] == pytest.approx((RECORDS - 1) * INTERVAL, abs=INTERVAL)


def test_strict_spacing_loses_the_lateness() -> None:
    """burst 1 (the file source's spacing) adds each wake-up's lateness: 30 % late wake-ups, 30 % slower."""
    time = VirtualTime(lateness=0.3)
    sent = paced(RateLimiter(RATE, burst=1, clock=time.clock), time, RECORDS)
    assert sent[-1] - sent[0] == pytest.approx((RECORDS - 1) * INTERVAL * 1.3, rel=0.01)


def test_the_schedule_starts_empty_and_is_never_early() -> None:
    """Even with a large burst allowance, record k goes no earlier than k intervals after the first."""
    time = VirtualTime()
    sent = paced(RateLimiter(RATE, burst=50, clock=time.clock), time, 200)
    assert all(t - sent[0] >= k * INTERVAL - 1e-9 for k, t in enumerate(sent))


def test_after_a_stall_at_most_burst_records_go_back_to_back() -> None:
    """A 10 s stall (a blocked sink) is not made up: `burst` records go at once, then the rate resumes."""
    time = VirtualTime()
    limiter = RateLimiter(RATE, burst=20, clock=time.clock)
    paced(limiter, time, 10)
    time.now += 10.0
    waits_before = time.waits
    at_once = 0
    while True:
        assert limiter.wait(time)
        if time.waits != waits_before:
            break
        at_once += 1
    assert at_once == 20


def test_rate_0_never_waits_and_reports_stop() -> None:
    """Without a rate the limiter returns at once, and False once the daemon is stopping."""
    time = VirtualTime()
    limiter = RateLimiter(0, clock=time.clock)
    assert all(limiter.wait(time) for _ in range(100)) and time.waits == 0
    time.stopping = True
    assert not limiter.wait(time)


def test_burst_below_one_is_refused() -> None:
    """A burst of 0 records would never send anything: refused."""
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(RATE, burst=0)
