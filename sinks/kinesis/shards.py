"""Placeholder (the SHARDS helper's module replaces it): open shards, their hash-key ranges, routing."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_HASH_KEY = 2**128 - 1


@dataclass(frozen=True)
class Shard:
    shard_id: str
    start: int
    end: int  # inclusive hash-key range
    parent_ids: tuple[str, ...] = ()


def list_open_shards(client: Any, stream: str) -> list[Shard]:
    """Every open shard of `stream` (ListShards, paginated); a closed shard has an ending sequence number."""
    shards: list[Shard] = []
    token: str | None = None
    while True:
        page = client.list_shards(NextToken=token) if token else client.list_shards(StreamName=stream)
        for item in page.get("Shards", []):
            if item.get("SequenceNumberRange", {}).get("EndingSequenceNumber"):
                continue
            parents = tuple(p for p in (item.get("ParentShardId"), item.get("AdjacentParentShardId")) if p)
            keys = item["HashKeyRange"]
            shards.append(Shard(item["ShardId"], int(keys["StartingHashKey"]), int(keys["EndingHashKey"]), parents))
        token = page.get("NextToken")
        if not token:
            return sorted(shards, key=lambda s: s.start)


class ShardMap:
    def __init__(self, lister: Callable[[], list[Shard]], *, refresh_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lister = lister
        self._interval = refresh_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._shards: tuple[Shard, ...] = ()
        self._starts: list[int] = []
        self._generation = 0
        self._listed_at: float | None = None

    def refresh(self, reason: str) -> bool:
        shards = tuple(sorted(self._lister(), key=lambda s: s.start))
        with self._lock:
            self._listed_at = self._clock()
            if shards == self._shards:
                return False
            self._shards = shards
            self._starts = [s.start for s in shards]
            self._generation += 1
            return True

    def route(self, hash_key: int) -> Shard:
        with self._lock:
            shards, starts = self._shards, self._starts
        if not shards:
            raise LookupError("the shard map is empty")
        index = max(0, bisect.bisect_right(starts, hash_key) - 1)
        return shards[index]

    @property
    def shards(self) -> tuple[Shard, ...]:
        return self._shards

    @property
    def generation(self) -> int:
        return self._generation

    def refresh_due(self) -> bool:
        return self._listed_at is None or self._clock() - self._listed_at >= self._interval
