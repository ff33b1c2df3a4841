"""The stream's open shards and their hash-key ranges, and the routing of a hash key to its shard.

Kinesis puts a record on the open shard whose HashKeyRange holds MD5(partition key) (or the explicit hash
key). Knowing that map lets the sink group records per shard (rate limits, aggregation, ordering). The map
goes stale when the stream is resharded; the engine refreshes it periodically and when answers show it
(records landing on another shard, a closed shard, child shards).

`route` is on the hot path: it reads one immutable snapshot (sorted range starts + their shards) with
`bisect` and takes no lock. `refresh` replaces the snapshot as a whole under a lock.
"""

from __future__ import annotations

import heapq
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

MAX_HASH_KEY = 2**128 - 1
# Shards per ListShards page. AWS accepts 1..10,000; 1,000 keeps one answer small, and a stream has more
# open shards than that only when it is very large.
LIST_SHARDS_PAGE_SIZE = 1000
# Pages one listing may take before it is considered broken (a server handing out NextTokens forever).
MAX_LIST_PAGES = 1000
# A listing that outlives its NextToken (AWS: 300 s, e.g. a process paused mid-listing) starts over once.
EXPIRED_TOKEN_CODE = "ExpiredNextTokenException"  # noqa: S105 - an error code, not a secret
EXPIRED_TOKEN_RESTARTS = 1


class ShardMapError(Exception):
    """A shard listing that cannot be used: a malformed ListShards answer, or a stream without open shards."""


@dataclass(frozen=True)
class Shard:
    shard_id: str
    start: int  # inclusive
    end: int  # inclusive
    parent_ids: tuple[str, ...] = ()

    def holds(self, hash_key: int) -> bool:
        return self.start <= hash_key <= self.end


def parse_shard(item: Any, stream: str) -> Shard | None:
    """One entry of a ListShards answer's `Shards` as a Shard; None for a closed shard (its sequence-number
    range has an end). Raises ShardMapError naming the stream and shard when the entry is malformed."""
    if not isinstance(item, Mapping):
        raise ShardMapError(f"ListShards for stream {stream}: a shard entry is {type(item).__name__}, not an object")
    shard_id = item.get("ShardId")
    if not isinstance(shard_id, str) or not shard_id:
        raise ShardMapError(f"ListShards for stream {stream}: a shard entry has no ShardId: {_clip(item)}")
    where = f"ListShards for stream {stream}: shard {shard_id}"
    sequence_range = item.get("SequenceNumberRange")
    if isinstance(sequence_range, Mapping) and sequence_range.get("EndingSequenceNumber") is not None:
        return None
    hash_range = item.get("HashKeyRange")
    if not isinstance(hash_range, Mapping):
        raise ShardMapError(f"{where}: no HashKeyRange")
    start = _hash_key(hash_range.get("StartingHashKey"), f"{where}: StartingHashKey")
    end = _hash_key(hash_range.get("EndingHashKey"), f"{where}: EndingHashKey")
    if start > end:
        raise ShardMapError(f"{where}: StartingHashKey {start} > EndingHashKey {end}")
    parents = tuple(p for p in (item.get("ParentShardId"), item.get("AdjacentParentShardId")) if isinstance(p, str) and p)
    return Shard(shard_id, start, end, parents)


def _hash_key(value: Any, where: str) -> int:
    # Kinesis sends hash keys as decimal strings (they exceed 64 bits).
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise ShardMapError(f"{where}: {_clip(value)} is not a decimal hash key")
    number = int(value)
    if number > MAX_HASH_KEY:
        raise ShardMapError(f"{where}: {_clip(value)} is above 2^128-1")
    return number


def _clip(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def list_open_shards(client: Any, stream: str, *, page_size: int = LIST_SHARDS_PAGE_SIZE) -> list[Shard]:
    """The stream's open shards, sorted by range start: ListShards with every page followed.

    `client` is a boto3 Kinesis client; `stream` a stream name or ARN. A follow-up call passes only
    NextToken (AWS refuses StreamName beside it). Closed shards (a sequence-number range with an end) are
    left out here rather than with ShardFilter AT_LATEST, which moto's server ignores. A NextToken that
    expired (AWS keeps them 300 s) restarts the listing once. Other errors of the call propagate
    (botocore's ClientError); a malformed answer raises ShardMapError.
    """
    for attempt in range(1 + EXPIRED_TOKEN_RESTARTS):
        try:
            return _list_all_pages(client, stream, page_size)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code != EXPIRED_TOKEN_CODE or attempt == EXPIRED_TOKEN_RESTARTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _list_all_pages(client: Any, stream: str, page_size: int) -> list[Shard]:
    request: dict[str, Any] = {"StreamARN" if stream.startswith("arn:") else "StreamName": stream}
    found: dict[str, Shard] = {}
    for _ in range(MAX_LIST_PAGES):
        answer = client.list_shards(**request, MaxResults=page_size)
        items = answer.get("Shards") if isinstance(answer, Mapping) else None
        if not isinstance(items, list):
            raise ShardMapError(f"ListShards for stream {stream}: the answer has no Shards list: {_clip(answer)}")
        for item in items:
            shard = parse_shard(item, stream)
            if shard is not None:
                found[shard.shard_id] = shard  # by id: a shard repeated across pages counts once
        token = answer.get("NextToken")
        if not token:
            return sorted(found.values(), key=lambda s: (s.start, s.end, s.shard_id))
        request = {"NextToken": token}
    raise ShardMapError(f"ListShards for stream {stream}: still a NextToken after {MAX_LIST_PAGES} pages")


@dataclass(frozen=True)
class _Snapshot:
    """What route() reads: segment starts (sorted) and the shard each segment routes to."""

    shards: tuple[Shard, ...]
    starts: tuple[int, ...]
    targets: tuple[Shard, ...]
    by_id: Mapping[str, Shard]


def coverage_problem_of(shards: Sequence[Shard]) -> str | None:
    """None when the ranges (sorted by start) tile [0, 2^128-1] exactly; else the first gap or overlap."""
    if not shards:
        return "no open shard"
    expected = 0
    for shard in shards:
        if shard.start > expected:
            return f"hash keys {expected}..{shard.start - 1} are in no open shard (gap before {shard.shard_id})"
        if shard.start < expected:
            return f"shard {shard.shard_id} overlaps the range before it at {shard.start}..{min(shard.end, expected - 1)}"
        expected = shard.end + 1
    if expected <= MAX_HASH_KEY:
        return f"hash keys {expected}..{MAX_HASH_KEY} are in no open shard (gap after the last shard)"
    return None


def _segments(shards: Sequence[Shard]) -> tuple[tuple[int, ...], tuple[Shard, ...]]:
    """Disjoint segments covering [0, 2^128-1], each with the shard a key there routes to.

    Ranges that tile the key space are their own segments. Otherwise (mid-reshard listings) a key goes to
    the shard holding it with the largest start (a child, rather than the wider parent still listed beside
    it); a key in no range goes to the shard with the largest start <= key (the first shard below all).
    """
    if coverage_problem_of(shards) is None:
        return tuple(s.start for s in shards), tuple(shards)
    ordered = sorted(shards, key=lambda s: (s.start, -s.end, s.shard_id))
    bounds = sorted({0} | {s.start for s in ordered} | {s.end + 1 for s in ordered if s.end < MAX_HASH_KEY})
    starts: list[int] = []
    targets: list[Shard] = []
    active: list[tuple[int, int, int]] = []  # heap of (-start, end, index): the latest-starting shard on top
    next_shard = 0
    latest_started: Shard = ordered[0]
    for bound in bounds:
        while next_shard < len(ordered) and ordered[next_shard].start <= bound:
            shard = ordered[next_shard]
            heapq.heappush(active, (-shard.start, shard.end, next_shard))
            latest_started = shard
            next_shard += 1
        while active and active[0][1] < bound:
            heapq.heappop(active)  # ended before this segment
        # Expired shards deeper in the heap may remain; the top is checked, so they are never chosen.
        target = ordered[active[0][2]] if active else latest_started
        if not targets or targets[-1] is not target:
            starts.append(bound)
            targets.append(target)
    return tuple(starts), tuple(targets)


class ShardMap:
    """The open shards of one stream, listed by `lister` (e.g. `lambda: list_open_shards(client, name)`)."""

    def __init__(
        self,
        lister: Callable[[], list[Shard]],
        *,
        refresh_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lister = lister
        self._interval = refresh_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._generation = 0
        self._started = 0  # listings begun: a caller that waited on the lock can share a later one
        self._listed_at: float | None = None
        self.coverage_problem: str | None = None  # why the current ranges do not tile the key space, if so
        self.last_problem: str | None = None  # why the last listing was not used (e.g. empty), if so

    def refresh(self, reason: str) -> bool:
        """List the shards again; True if the open shard set changed. Thread-safe.

        A caller that waited while another thread began a listing after this call takes that listing's
        outcome instead of listing again (misroutes seen on several threads at once cost one ListShards).
        An empty listing keeps the map (False), except at the first refresh, which raises ShardMapError:
        there is nothing to route to.
        Errors of the lister propagate; the map stays as it was and the periodic timer restarts.
        """
        seen_generation, seen_started = self._generation, self._started
        with self._lock:
            if self._started != seen_started and self._snapshot is not None:
                return self._generation != seen_generation
            self._started += 1
            try:
                listed = self._lister()
            finally:
                self._listed_at = self._clock()
            shards = tuple(sorted(listed, key=lambda s: (s.start, s.end, s.shard_id)))
            if not shards:
                self.last_problem = f"the {reason} listing found no open shard; the previous map is kept"
                if self._snapshot is None:
                    raise ShardMapError("the stream has no open shard to send to")
                return False
            self.last_problem = None
            if self._snapshot is not None and set(self._snapshot.shards) == set(shards):
                return False
            starts, targets = _segments(shards)
            self.coverage_problem = coverage_problem_of(shards)
            self._snapshot = _Snapshot(shards, starts, targets, {s.shard_id: s for s in shards})
            self._generation += 1
            return True

    def route(self, hash_key: int) -> Shard:
        """The open shard whose range holds `hash_key` (see _segments when ranges do not tile the space)."""
        snapshot = self._snapshot
        if snapshot is None:
            raise ShardMapError("the shard map was never refreshed")
        index = bisect_right(snapshot.starts, hash_key) - 1
        return snapshot.targets[index if index >= 0 else 0]

    def get(self, shard_id: str) -> Shard | None:
        """The open shard with this id, or None (closed, or not listed yet)."""
        snapshot = self._snapshot
        return None if snapshot is None else snapshot.by_id.get(shard_id)

    @property
    def shards(self) -> tuple[Shard, ...]:
        """The open shards, sorted by range start."""
        snapshot = self._snapshot
        return () if snapshot is None else snapshot.shards

    @property
    def generation(self) -> int:
        return self._generation

    def refresh_due(self) -> bool:
        """Whether `refresh_interval_s` passed since the last listing (True before the first)."""
        listed_at = self._listed_at
        return listed_at is None or self._clock() - listed_at >= self._interval
