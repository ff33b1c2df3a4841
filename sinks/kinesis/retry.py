"""The retry decision, as a value, and the backoff schedule."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from sinks.kinesis.service import FailureKind, PutOutcome, PutResponse

REASON_PUT_REJECTED = "put_rejected"
REASON_RETRIES_EXHAUSTED = "retries_exhausted"


@dataclass(frozen=True)
class Decision:
    """What to do with the entries of one attempt, by their positions in it.

    Positions in none of `retry`, `hold`, `resend`, `reject` were delivered (unless `split`).
    """

    retry: tuple[int, ...] = ()  # transient failure: again after a backoff; counts towards max_attempts
    hold: tuple[int, ...] = ()  # the stream refused everyone: again after a backoff, never dead-lettered
    resend: tuple[int, ...] = ()  # not tried, because others in the request were invalid: again at once
    reject: tuple[tuple[int, str], ...] = ()  # (position, detail): the record itself is refused; dead-letter
    split: bool = False  # the request was invalid without naming the entry at fault: halve it to find it
    result: str = "success"  # the request's outcome, as the `result` label of the request metric
    unhealthy: tuple[str, str] | None = None  # (code, detail) when the stream itself refused the request
    codes: Counter[str] = field(default_factory=Counter)  # error code -> entries it hit, for events

    @property
    def delivered_all(self) -> bool:
        return not (self.retry or self.hold or self.resend or self.reject or self.split)

    @property
    def needs_backoff(self) -> bool:
        return bool(self.retry or self.hold)


def decide(outcome: PutOutcome, entries: int) -> Decision:
    """Map one outcome to a decision; stream-level refusals hold every entry, record-level ones reject one."""
    if isinstance(outcome, PutResponse):
        return _partial(outcome)
    everything = tuple(range(entries))
    codes = Counter({outcome.code: entries})
    result = outcome.kind.value
    detail = f"{outcome.code}: {outcome.message}"
    if outcome.kind.stream_level:
        return Decision(hold=everything, result=result, unhealthy=(outcome.code, outcome.message), codes=codes)
    if outcome.kind is not FailureKind.INVALID:
        return Decision(retry=everything, result=result, codes=codes)
    if outcome.invalid:
        bad = {position for position, _ in outcome.invalid}
        resend = tuple(p for p in everything if p not in bad)
        return Decision(resend=resend, reject=outcome.invalid, result=result, codes=Counter({outcome.code: len(bad)}))
    if entries == 1:
        return Decision(reject=((0, detail),), result=result, codes=codes)
    return Decision(split=True, result=result, codes=codes)


def _partial(outcome: PutResponse) -> Decision:
    failures = outcome.failures
    if not failures:
        return Decision()
    hold = tuple(f.position for f in failures if f.stream_level)
    unhealthy = next(((f.code, f.message) for f in failures if f.stream_level), None)
    return Decision(
        retry=tuple(f.position for f in failures if f.retriable),
        hold=hold,
        reject=tuple((f.position, f"{f.code}: {f.message}") for f in failures if not f.retriable and not f.stream_level),
        result="partial",
        unhealthy=unhealthy,
        codes=Counter(f.code for f in failures),
    )


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
