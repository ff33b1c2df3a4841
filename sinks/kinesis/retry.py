"""The retry decision, as a value, and the backoff schedule."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from sinks.kinesis.service import CallFailed, PutOutcome

REASON_PUT_REJECTED = "put_rejected"
REASON_RETRIES_EXHAUSTED = "retries_exhausted"


@dataclass(frozen=True)
class Decision:
    """What to do with the entries of one attempt, by their positions in it.

    Positions in neither `retry` nor `reject` were delivered.
    """

    retry: tuple[int, ...] = ()
    reject: tuple[tuple[int, str], ...] = ()  # (position, detail): permanent failures, to dead-letter
    codes: Counter[str] = field(default_factory=Counter)  # error code -> entries it hit, for events

    @property
    def delivered_all(self) -> bool:
        return not self.retry and not self.reject


def decide(outcome: PutOutcome, entries: int) -> Decision:
    """Whole-call retriable failures retry everything; partial failures retry only the failed entries."""
    if isinstance(outcome, CallFailed):
        codes = Counter({outcome.code: entries})
        if outcome.retriable:
            return Decision(retry=tuple(range(entries)), codes=codes)
        detail = f"{outcome.code}: {outcome.message}"
        return Decision(reject=tuple((p, detail) for p in range(entries)), codes=codes)
    retry = tuple(f.position for f in outcome.failures if f.retriable)
    reject = tuple((f.position, f"{f.code}: {f.message}") for f in outcome.failures if not f.retriable)
    return Decision(retry=retry, reject=reject, codes=Counter(f.code for f in outcome.failures))


class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniformly in [0, min(max, initial * 2^(n-1))]."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        return min(self.max_s, self.initial_s * 2 ** min(attempt - 1, 62))

    def delay(self, attempt: int) -> float:
        return self.rng.uniform(0, self.ceiling(attempt))
