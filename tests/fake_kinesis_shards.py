"""The shards of tests/fake_kinesis.py's stream: even ranges, routing by hash key, split and merge.

Not thread-safe by itself: FakeKinesis calls it under its lock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from tests.fake_kinesis_types import ShardInfo, ShardState, even_ranges


class ShardSet:
    """Every shard of the stream in creation order (closed ones stay, as ListShards shows them)."""

    def __init__(self, count: int) -> None:
        self._all = [ShardState(f"shardId-{i:012d}", i, start, end) for i, (start, end) in enumerate(even_ranges(count))]
        self._by_id = {s.shard_id: s for s in self._all}
        self._index()

    def __iter__(self) -> Iterator[ShardState]:
        return iter(self._all)

    def get(self, shard_id: str) -> ShardState | None:
        return self._by_id.get(shard_id)

    def infos(self, *, open_only: bool = False) -> list[ShardInfo]:
        return [s.info() for s in self._all if not open_only or s.ending_sequence is None]

    @property
    def open_count(self) -> int:
        return len(self._open)

    def route(self, hash_key: int) -> ShardState:
        """The open shard whose range holds `hash_key` (the open ranges always cover [0, 2^128-1])."""
        return self._open[bisect.bisect_right(self._starts, hash_key) - 1]

    def closed_since(self, since: float) -> list[ShardState]:
        """The shards closed after `since` (a clock reading)."""
        return [s for s in self._all if s.closed_at is not None and s.closed_at > since]

    def split(self, shard_id: str, new_starting_hash_key: int | None, now: float) -> tuple[ShardState, ShardState]:
        """Closes an open shard and opens two children over its halves (the upper one from the new start)."""
        parent = self._open_shard(shard_id)
        middle = (parent.start + parent.end + 1) // 2 if new_starting_hash_key is None else new_starting_hash_key
        if not parent.start < middle <= parent.end:
            raise ValueError(f"{middle} is not inside {shard_id}'s range (start excluded)")
        self._close(parent, now)
        return (self._add(parent.start, middle - 1, parent.shard_id, None),
                self._add(middle, parent.end, parent.shard_id, None))

    def merge(self, shard_id: str, adjacent_shard_id: str, now: float) -> ShardState:
        """Closes two adjacent open shards and opens one child over both (ParentShardId is `shard_id`)."""
        first, second = self._open_shard(shard_id), self._open_shard(adjacent_shard_id)
        low, high = sorted((first, second), key=lambda s: s.start)
        if low.end + 1 != high.start:
            raise ValueError(f"{shard_id} and {adjacent_shard_id} are not adjacent")
        self._close(first, now)
        self._close(second, now)
        return self._add(low.start, high.end, first.shard_id, second.shard_id)

    def _open_shard(self, shard_id: str) -> ShardState:
        shard = self._by_id.get(shard_id)
        if shard is None or shard.ending_sequence is not None:
            raise ValueError(f"{shard_id} is not an open shard")
        return shard

    def _close(self, shard: ShardState, now: float) -> None:
        shard.ending_sequence = shard.sequence(max(shard.next_seq - 1, 0))
        shard.closed_at = now

    def _add(self, start: int, end: int, parent: str, adjacent: str | None) -> ShardState:
        ordinal = len(self._all)
        shard = ShardState(f"shardId-{ordinal:012d}", ordinal, start, end, parent, adjacent)
        self._all.append(shard)
        self._by_id[shard.shard_id] = shard
        self._index()
        return shard

    def _index(self) -> None:
        self._open = sorted((s for s in self._all if s.ending_sequence is None), key=lambda s: s.start)
        self._starts = [s.start for s in self._open]
