"""A deterministic simulation of Kinesis's per-shard write limits and a producer paced by a ShardLimiter.

No sleeping and no threads: a fake clock jumps from event to event (sends, arrivals at the shard,
answers), so a minute of traffic simulates in well under a second. `SimulatedShard` refuses, like Kinesis,
each entry that would take the records or bytes accepted within the last second over its limits.
`run_producer` models a sender that always has records ready and sends what the limiter allows, retrying
refused entries first. The engine's tests may reuse both.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sinks.kinesis.ratelimit import ShardLimiter

KINESIS_WINDOW_S = 1.0
MAX_BATCH = 500  # PutRecords' entry limit
ROUND_TRIP_S = 0.020
ROUND_TRIP_JITTER_S = 0.004  # each half of a round trip varies by up to +-2 ms
MIN_HALF_TRIP_S = 0.0001  # jitter never makes an answer come before its request
POLL_FLOOR_S = 0.001  # the shortest wait between a sender's attempts to send


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class SimulatedShard:
    """One shard's write limits over a rolling one-second window of arrivals."""

    records_per_s: int
    bytes_per_s: int
    _accepted: deque[tuple[float, int]] = field(default_factory=deque)  # (arrival, size) per accepted entry
    _bytes: int = 0

    def offer(self, at: float, sizes: Sequence[int]) -> list[bool]:
        """Which of the entries arriving at `at`, in order, the shard takes."""
        while self._accepted and self._accepted[0][0] <= at - KINESIS_WINDOW_S:
            self._bytes -= self._accepted.popleft()[1]
        taken = []
        for size in sizes:
            ok = len(self._accepted) < self.records_per_s and self._bytes + size <= self.bytes_per_s
            if ok:
                self._accepted.append((at, size))
                self._bytes += size
            taken.append(ok)
        return taken


@dataclass
class SimResult:
    """What a run delivered; `accepted_at` holds (arrival time, entries accepted) per request."""

    record_size: int
    accepted_at: list[tuple[float, int]] = field(default_factory=list)
    throttled_at: list[tuple[float, int]] = field(default_factory=list)
    requests: int = 0

    def accepted(self, since: float = 0.0) -> int:
        return sum(n for t, n in self.accepted_at if t >= since)

    def throttled(self, since: float = 0.0) -> int:
        return sum(n for t, n in self.throttled_at if t >= since)

    def goodput(self, shard: SimulatedShard, duration_s: float, since: float = 0.0) -> float:
        """Accepted entries as a fraction of what the shard's binding limit allows over [since, duration_s]."""
        per_s = min(shard.records_per_s, shard.bytes_per_s / self.record_size)
        return self.accepted(since) / (per_s * (duration_s - since))

    def throttles_per_record(self, since: float = 0.0) -> float:
        return self.throttled(since) / max(1, self.accepted(since))


def run_producer(
    limiter: ShardLimiter,
    shard: SimulatedShard,
    clock: FakeClock,
    *,
    record_size: int,
    duration_s: float,
    in_flight: int = 1,
    round_trip_s: float = ROUND_TRIP_S,
    jitter_s: float = ROUND_TRIP_JITTER_S,
    seed: int = 0,
) -> SimResult:
    """Send `record_size`-byte entries to `shard` for `duration_s` simulated seconds, as `limiter` allows.

    `clock` must be the limiter's clock. Up to `in_flight` requests are outstanding; each carries at most
    MAX_BATCH entries; an entry reaches the shard half a round trip after it is sent and its answer comes
    half a round trip later (each half jittered). Refused entries are sent again before new ones (all
    entries are alike, so only their count matters).
    """
    return run_producers([limiter], shard, clock, record_size=record_size, duration_s=duration_s, in_flight=in_flight,
                         round_trip_s=round_trip_s, jitter_s=jitter_s, seed=seed)[0]


@dataclass
class _Producer:
    limiter: ShardLimiter
    result: SimResult
    outstanding: int = 0
    wake_at: float | None = None


def run_producers(
    limiters: Sequence[ShardLimiter],
    shard: SimulatedShard,
    clock: FakeClock,
    *,
    record_size: int,
    duration_s: float,
    in_flight: int = 1,
    round_trip_s: float = ROUND_TRIP_S,
    jitter_s: float = ROUND_TRIP_JITTER_S,
    seed: int = 0,
) -> list[SimResult]:
    """run_producer for several producers (one limiter each, e.g. several daemons) sharing one shard."""
    rng = random.Random(seed)
    producers = [_Producer(limiter, SimResult(record_size)) for limiter in limiters]
    events: list[tuple[float, int, int, str, int, int]] = []  # (time, sequence, producer, kind, entries, refused)
    sequence = 0

    def push(at: float, who: int, kind: str, entries: int, refused: int = 0) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (at, sequence, who, kind, entries, refused))

    def half_trip() -> float:
        return max(MIN_HALF_TRIP_S, round_trip_s / 2 + rng.uniform(-jitter_s / 2, jitter_s / 2))

    def send_what_may_go(who: int) -> None:
        producer = producers[who]
        limiter = producer.limiter
        while producer.outstanding < in_flight:
            records, size = limiter.available()
            count = min(MAX_BATCH, int(records), int(size // record_size))
            if count <= 0 and limiter.delay_for(1, record_size) == 0:
                count = 1  # an entry larger than the whole burst goes alone once the limiter says so
            if count <= 0:
                break
            limiter.spend(count, count * record_size)
            producer.outstanding += 1
            producer.result.requests += 1
            push(clock.now + half_trip(), who, "arrive", count)
        if producer.outstanding < in_flight:
            at = clock.now + max(POLL_FLOOR_S, limiter.delay_for(1, record_size))
            if producer.wake_at is None or at < producer.wake_at:
                producer.wake_at = at
                push(at, who, "wake", 0)

    for who in range(len(producers)):
        send_what_may_go(who)
    while events:
        at, _, who, kind, entries, refused = heapq.heappop(events)
        if at > duration_s:
            break
        clock.now = at
        producer = producers[who]
        if kind == "wake" and producer.wake_at is not None and producer.wake_at <= at:
            producer.wake_at = None
        if kind == "arrive":
            taken = sum(shard.offer(at, [record_size] * entries))
            producer.result.accepted_at.append((at, taken))
            if taken < entries:
                producer.result.throttled_at.append((at, entries - taken))
            push(at + half_trip(), who, "answer", entries, entries - taken)
            continue
        if kind == "answer":
            producer.outstanding -= 1
            if refused:
                producer.limiter.throttled()
            if entries > refused:
                producer.limiter.succeeded(entries - refused)
        send_what_may_go(who)
    return [producer.result for producer in producers]
