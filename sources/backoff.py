"""Reconnect delays for live sources: linear and exponential schedules, optionally jittered, reset on success.

Servers publish their own rules (X: linear +250 ms for network errors, exponential from 5 s for HTTP errors,
from 60 s for 429), so a schedule is a small value object a source picks per failure class, not a policy
baked into the daemon.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delay n (from 1) is `initial * factor^(n-1)` (factor > 1) or `initial + step * (n-1)` (factor == 1), capped.

    With `jitter`, each delay is drawn uniformly from [delay/2, delay] so clients that failed together do not
    come back together; without it the schedule is exact (X documents exact schedules).
    """

    initial_s: float
    maximum_s: float
    factor: float = 2.0
    step_s: float = 0.0
    jitter: bool = False
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempts: int = 0

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.maximum_s < self.initial_s or self.factor < 1:
            raise ValueError(f"invalid backoff {self.initial_s}..{self.maximum_s} x{self.factor}")

    def peek(self) -> float:
        """The delay the next `next()` would return before jitter."""
        n = self.attempts  # delays already taken
        delay = self.initial_s * self.factor ** min(n, 64) if self.factor > 1 else self.initial_s + self.step_s * n
        return min(delay, self.maximum_s)

    def next(self) -> float:
        """The delay before the next attempt; each call moves one step along the schedule."""
        delay = self.peek()
        self.attempts += 1
        return self.rng.uniform(delay / 2, delay) if self.jitter else delay

    def reset(self) -> None:
        """A connection worked: the next failure starts the schedule over."""
        self.attempts = 0


def linear(step_s: float, maximum_s: float, initial_s: float | None = None) -> Backoff:
    """`initial`, `initial + step`, ... up to `maximum` (X's rule for network errors: +250 ms up to 16 s)."""
    return Backoff(initial_s=step_s if initial_s is None else initial_s, maximum_s=maximum_s, factor=1.0, step_s=step_s)


def exponential(initial_s: float, maximum_s: float, jitter: bool = False, rng: random.Random | None = None) -> Backoff:
    """`initial`, doubling up to `maximum`."""
    return Backoff(initial_s=initial_s, maximum_s=maximum_s, jitter=jitter, rng=rng or random.Random())
