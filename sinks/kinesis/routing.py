"""The shard map as the engine uses it: one queue per open shard, routing by hash key, re-routing on change.

Used under the engine's lock. The ShardMap itself is listed outside it (ListShards is a network call).
"""

from __future__ import annotations

from collections.abc import Sequence

from sinks.kinesis.config import ShardLimitsConfig
from sinks.kinesis.queues import ShardQueue
from sinks.kinesis.ratelimit import ShardLimiter
from sinks.kinesis.records import KinesisEntry
from sinks.kinesis.settle import UNKNOWN_SHARD_ID
from sinks.kinesis.shards import MAX_HASH_KEY, Shard, ShardMap

# Stands in for the stream's shards until ListShards answers: every hash key, no rate limit (the real
# number of shards is unknown, so any limit would be a guess), no misroute detection.
UNKNOWN_SHARD = Shard(UNKNOWN_SHARD_ID, 0, MAX_HASH_KEY)


class Router:
    def __init__(self, shard_map: ShardMap, limits: ShardLimitsConfig) -> None:
        self.map = shard_map
        self.limits = limits
        self.queues: dict[str, ShardQueue] = {}
        self.order: list[ShardQueue] = []  # by hash-key range
        self._generation = -1

    def sync(self, force: bool = False) -> int:
        """Follow the map if it changed: queues for new shards, records of gone ones re-routed (returned count)."""
        if self._generation == self.map.generation and self.order and not force:
            return 0
        self._generation = self.map.generation
        shards = sorted(self.map.shards, key=lambda s: s.start) or [UNKNOWN_SHARD]
        old = self.queues
        self.queues = {}
        for shard in shards:
            queue = old.get(shard.shard_id)
            if queue is None or queue.shard != shard:
                limiter = None
                if shard.shard_id != UNKNOWN_SHARD_ID:
                    limiter = ShardLimiter(self.limits.records_per_second, self.limits.bytes_per_second,
                                           adaptive=self.limits.adaptive)
                queue = ShardQueue(shard, limiter) if queue is None else _moved(queue, shard)
            self.queues[shard.shard_id] = queue
        self.order = list(self.queues.values())
        moved = 0
        for shard_id, queue in old.items():
            if self.queues.get(shard_id) is not queue:
                queue.gone = True
                entries = queue.drain()
                moved += len(entries)
                self.requeue(queue, entries)
        return moved

    def route(self, hash_key: int) -> ShardQueue:
        """The queue of the shard the map routes `hash_key` to (following the map first if it changed)."""
        queue = self.queues.get(self.map.route(hash_key).shard_id)
        while queue is None:  # the map changed since the last sync (its generation may not show it yet)
            self.sync(force=True)
            queue = self.queues.get(self.map.route(hash_key).shard_id)
        return queue

    def requeue(self, queue: ShardQueue, entries: Sequence[KinesisEntry]) -> None:
        """Records going again: to the front of their queue, or re-routed (in order) if the shard is gone."""
        if not entries:
            return
        if not queue.gone:
            queue.push_front(entries)
            return
        self.reroute(entries)

    def reroute(self, entries: Sequence[KinesisEntry]) -> None:
        """Records to the front of the queues their hash keys route to now, each queue's in their order."""
        groups: dict[int, tuple[ShardQueue, list[KinesisEntry]]] = {}
        for entry in entries:
            target = self.route(entry.hash_key)
            groups.setdefault(id(target), (target, []))[1].append(entry)
        for target, group in groups.values():
            target.push_front(group)

    def holds(self, shard_id: str, hash_key: int) -> bool | None:
        """Whether `shard_id`'s range holds `hash_key` in the current map; None if the shard is unknown."""
        shard = self.map.get(shard_id)
        if shard is None:
            return None
        return shard.start <= hash_key <= shard.end

    def queued(self) -> int:
        return sum(len(q.entries) for q in self.order)


def _moved(queue: ShardQueue, shard: Shard) -> ShardQueue:
    """The same shard id with another range (should not happen): a fresh queue; the old one's records re-route."""
    return ShardQueue(shard, queue.limiter)
