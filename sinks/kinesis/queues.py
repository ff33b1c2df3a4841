"""Per-shard FIFO queues and the assembly of one PutRecords request from the shards that may send now.

Called under the engine's lock only. A shard may send when its backoff is over, its rate limiter lets at
least its oldest record go and (ordered mode) none of its requests is in flight. A request is built when it
would be full, when the oldest waiting record of a ready shard waited `linger`, or at once when finishing;
it takes records from several ready shards, round robin, so a slow shard never holds back the others.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sinks.kinesis.aggregate import Aggregate, aggregate_all
from sinks.kinesis.ratelimit import ShardLimiter
from sinks.kinesis.records import KinesisEntry
from sinks.kinesis.shards import Shard

# What aggregation adds per user record (protobuf tags, lengths, key index) and per aggregate (magic, MD5,
# key table): used to estimate how many user records fill a request before they are packed.
AGGREGATE_RECORD_OVERHEAD = 16
AGGREGATE_FRAME_OVERHEAD = 4 + 16 + 300
# The shortest wait the scheduler schedules for a rate-limited shard: avoids spinning on tiny refills.
MIN_LIMITER_WAIT_S = 0.001

WireItem = KinesisEntry | Aggregate


@dataclass(slots=True, eq=False)
class ShardQueue:
    """One shard's waiting records, in order, and its delivery state."""

    shard: Shard
    limiter: ShardLimiter | None  # None for the stand-in shard used while the map is unknown
    entries: deque[KinesisEntry] = field(default_factory=deque)
    bytes: int = 0
    since: float = 0.0  # when the oldest queued record started waiting (0: long ago, e.g. a retry)
    ready_at: float = 0.0  # backoff: nothing of this shard goes before this time.monotonic()
    failures: int = 0  # consecutive backoffs of this shard: the backoff's exponent
    in_flight: int = 0  # requests carrying records of this shard
    gone: bool = False  # the shard left the map: records returning here are re-routed

    def push(self, entry: KinesisEntry, now: float) -> None:
        if not self.entries:
            self.since = now
        self.entries.append(entry)
        self.bytes += entry.size

    def push_front(self, entries: Sequence[KinesisEntry]) -> None:
        """Records coming back (retry, split, re-route) go before newer ones, in their original order."""
        self.entries.extendleft(reversed(entries))
        self.bytes += sum(e.size for e in entries)
        self.since = 0.0

    def drain(self) -> list[KinesisEntry]:
        taken = list(self.entries)
        self.entries.clear()
        self.bytes = 0
        return taken


@dataclass(slots=True, eq=False)
class Part:
    """The positions [start, stop) of a request that carry records of one shard queue."""

    queue: ShardQueue
    start: int
    stop: int


@dataclass(slots=True, eq=False)
class Request:
    """One PutRecords request: what goes on the wire, and whose records it carries."""

    records: list[WireItem]
    parts: list[Part]
    users: int  # user records carried (more than len(records) when aggregated)
    size: int
    aggregated: bool
    settled: bool = False  # its outcome was applied, or finish gave its records up as unsent

    def members(self, position: int) -> list[KinesisEntry]:
        item = self.records[position]
        return item.members if isinstance(item, Aggregate) else [item]

    def user_entries(self) -> list[KinesisEntry]:
        if not self.aggregated:
            return self.records  # type: ignore[return-value]
        return [m for position in range(len(self.records)) for m in self.members(position)]


@dataclass(frozen=True)
class Limits:
    max_records: int  # Kinesis records per request
    max_bytes: int
    linger_s: float
    ordered: bool
    aggregate: bool
    aggregate_bytes: int
    aggregate_records: int


def _ready(queue: ShardQueue, now: float, ordered: bool) -> float:
    """0 when the shard may send now, else when to look again (inf: when something else changes)."""
    if not queue.entries or (ordered and queue.in_flight):
        return math.inf
    if queue.ready_at > now:
        return queue.ready_at
    if queue.limiter is not None:
        delay = queue.limiter.delay_for(1, queue.entries[0].size)
        if delay > 0:
            return now + max(delay, MIN_LIMITER_WAIT_S)
    return 0.0


def assemble(
    queues: Sequence[ShardQueue], now: float, limits: Limits, *, flush: bool, window: int, offset: int
) -> tuple[Request | None, float]:
    """A request to send now, or None and the time worth waking up at (inf: wait for news)."""
    ready: list[ShardQueue] = []
    wake = math.inf
    waiting = size = 0
    due = flush
    for queue in queues:
        at = _ready(queue, now, limits.ordered)
        if at:
            wake = min(wake, at)
            continue
        ready.append(queue)
        waiting += len(queue.entries)
        size += queue.bytes
        if queue.since + limits.linger_s <= now:
            due = True
        else:
            wake = min(wake, queue.since + limits.linger_s)
    if not ready:
        return None, wake
    full = size >= limits.max_bytes or (not limits.aggregate and waiting >= limits.max_records)
    if not (due or full):
        return None, wake
    start = offset % len(ready)
    order = ready[start:] + ready[:start]
    request = _take(order, now, limits, min(window, limits.max_records))
    return (request if request.records else None), wake


def _take(order: Sequence[ShardQueue], now: float, limits: Limits, max_records: int) -> Request:
    records: list[WireItem] = []
    parts: list[Part] = []
    room_bytes = limits.max_bytes
    users = 0
    for queue in order:
        room_records = max_records - len(records)
        if room_records <= 0 or room_bytes <= 0:
            break
        allowed_records, allowed_bytes = queue.limiter.available() if queue.limiter else (math.inf, math.inf)
        items: list[WireItem]
        if limits.aggregate:
            taken, aggregates = _take_aggregated(queue, limits, room_records, room_bytes, allowed_records, allowed_bytes)
            # A lone record goes as itself: framing would only add bytes (and could push it over max_record_bytes).
            items = [a.members[0] if len(a.members) == 1 else a for a in aggregates]
        else:
            taken = _take_entries(queue, limits.ordered, _count(allowed_records, room_records), room_bytes, allowed_bytes)
            items = list(taken)
        if not taken:
            continue
        for entry in taken:
            entry.attempts += 1
            if not entry.first_attempt_at:
                entry.first_attempt_at = now
        item_bytes = sum(item.size for item in items)
        queue.bytes -= sum(e.size for e in taken) if limits.aggregate else item_bytes
        if queue.limiter is not None:
            queue.limiter.spend(len(items), item_bytes)
        queue.in_flight += 1
        parts.append(Part(queue, len(records), len(records) + len(items)))
        records.extend(items)
        room_bytes -= item_bytes
        users += len(taken)
    return Request(records, parts, users, limits.max_bytes - room_bytes, limits.aggregate)


def _count(allowed: float, room: int) -> int:
    """Whole records a limiter allows, at least one (the caller checked the oldest may go), at most `room`."""
    return room if math.isinf(allowed) else max(1, min(room, int(allowed)))


def _take_entries(
    queue: ShardQueue, ordered: bool, count: int, room_bytes: int, allowed_bytes: float
) -> list[KinesisEntry]:
    """Up to `count` records from the front that fit; ordered: stop at a key already in this request."""
    entries = queue.entries
    taken: list[KinesisEntry] = []
    keys: set[str] = set()
    budget = min(room_bytes, allowed_bytes)
    while entries and len(taken) < count:
        entry = entries[0]
        # The oldest record always goes once the limiter said it may (it may exceed one second's refill).
        if entry.size > room_bytes or (taken and entry.size > budget):
            break
        if ordered:
            if entry.partition_key in keys:
                break
            keys.add(entry.partition_key)
        entries.popleft()
        taken.append(entry)
        budget -= entry.size
        room_bytes -= entry.size
    return taken


def _take_aggregated(
    queue: ShardQueue, limits: Limits, room_records: int, room_bytes: int, allowed_records: float, allowed_bytes: float
) -> tuple[list[KinesisEntry], list[Aggregate]]:
    """User records of one shard packed into aggregates that fit the request and the shard's limiter."""
    max_aggregates = 1 if limits.ordered else _count(allowed_records, room_records)
    budget = min(room_bytes, allowed_bytes, max_aggregates * limits.aggregate_bytes)
    budget = max(budget, queue.entries[0].size + AGGREGATE_RECORD_OVERHEAD + AGGREGATE_FRAME_OVERHEAD)
    entries = queue.entries
    taken: list[KinesisEntry] = []
    used = AGGREGATE_FRAME_OVERHEAD
    limit = limits.aggregate_records * max_aggregates
    while entries and len(taken) < limit:
        cost = entries[0].size + AGGREGATE_RECORD_OVERHEAD
        if taken and used + cost > budget:
            break
        taken.append(entries.popleft())
        used += cost
    aggregates = aggregate_all(taken, limits.aggregate_bytes, limits.aggregate_records)
    # The estimate may overshoot: aggregates that do not fit go back, their records first in the queue.
    keep, size = 0, 0
    for aggregate in aggregates:
        if keep and (keep >= max_aggregates or size + aggregate.size > room_bytes):
            break
        keep += 1
        size += aggregate.size
    if keep < len(aggregates):
        back = [m for aggregate in aggregates[keep:] for m in aggregate.members]
        entries.extendleft(reversed(back))
        aggregates = aggregates[:keep]
        taken = taken[: len(taken) - len(back)]
    return taken, aggregates
