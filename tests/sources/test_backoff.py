"""Reconnect schedules: exact linear and exponential steps, caps, jitter bounds, reset."""

from __future__ import annotations

import random

import pytest

from sources.backoff import Backoff, exponential, linear


def test_linear_schedule_adds_a_step_up_to_the_cap() -> None:
    """X's network-error rule: 250 ms, 500 ms, ... capped at 16 s."""
    schedule = linear(0.25, 16.0)
    delays = [schedule.next() for _ in range(70)]
    assert delays[:3] == [0.25, 0.5, 0.75]
    assert delays[63] == 16.0 and max(delays) == 16.0


def test_exponential_schedule_doubles_up_to_the_cap_and_resets() -> None:
    """X's HTTP-error rule: 5, 10, 20 ... capped at 320 s; a success starts it over."""
    schedule = exponential(5.0, 320.0)
    assert [schedule.next() for _ in range(8)] == [5, 10, 20, 40, 80, 160, 320, 320]
    schedule.reset()
    assert schedule.next() == 5


def test_jittered_delays_stay_between_half_and_the_full_step() -> None:
    """Jitter spreads clients out but never waits longer than the schedule or less than half of it."""
    schedule = exponential(1.0, 8.0, jitter=True, rng=random.Random(7))
    for expected in (1, 2, 4, 8, 8):
        assert expected / 2 <= schedule.next() <= expected


def test_an_inverted_range_is_refused() -> None:
    """A maximum below the first delay is a programming error, caught when the schedule is made."""
    with pytest.raises(ValueError, match="invalid backoff"):
        Backoff(initial_s=5, maximum_s=1)
