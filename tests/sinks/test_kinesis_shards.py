"""The shard map: routing on tiled and mid-reshard ranges, coverage problems, refreshes and shared listings."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sinks.kinesis.shards import MAX_HASH_KEY, Shard, ShardMap, ShardMapError, coverage_problem_of
from tests.conftest import poll_until

WAIT_S = 10.0


# --- routing ----------------------------------------------------------------------------------


def tiling(cuts: list[int]) -> list[Shard]:
    """Shards split at the given (distinct, sorted) start points above 0."""
    starts = [0, *cuts]
    ends = [*(c - 1 for c in cuts), MAX_HASH_KEY]
    return [Shard(f"shard-{i}", s, e) for i, (s, e) in enumerate(zip(starts, ends, strict=True))]


def fixed_map(shards: list[Shard]) -> ShardMap:
    shard_map = ShardMap(lambda: list(shards), refresh_interval_s=60)
    shard_map.refresh("start")
    return shard_map


HASH_KEYS = st.integers(0, MAX_HASH_KEY)
CUTS = st.lists(st.integers(1, MAX_HASH_KEY), max_size=40, unique=True).map(sorted)


@settings(max_examples=200, deadline=None)
@given(cuts=CUTS, keys=st.lists(HASH_KEYS | st.sampled_from([0, MAX_HASH_KEY]), min_size=1, max_size=20))
def test_route_finds_the_shard_holding_any_key_of_contiguous_ranges(cuts: list[int], keys: list[int]) -> None:
    """For any tiling of [0, 2^128-1] and any key in it, route returns the shard whose range holds the key."""
    shards = tiling(cuts)
    shard_map = fixed_map(list(reversed(shards)))  # listing order must not matter
    assert shard_map.coverage_problem is None
    for key in keys + cuts + [c - 1 for c in cuts]:
        assert shard_map.route(key).holds(key)


RANGES = st.lists(st.tuples(HASH_KEYS, HASH_KEYS).map(sorted), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(ranges=RANGES, keys=st.lists(HASH_KEYS, min_size=1, max_size=20))
def test_route_never_raises_on_gaps_and_overlaps(ranges: list[list[int]], keys: list[int]) -> None:
    """Any ranges (mid-reshard): route gives the latest-starting holder, else the largest start <= key; problem named."""
    shards = [Shard(f"s{i}", start, end) for i, (start, end) in enumerate(ranges)]
    shard_map = fixed_map(shards)
    assert shard_map.coverage_problem == coverage_problem_of(sorted(shards, key=lambda s: (s.start, s.end, s.shard_id)))
    for key in [*keys, 0, MAX_HASH_KEY, *(s.end + 1 for s in shards if s.end < MAX_HASH_KEY)]:
        chosen = shard_map.route(key)
        holders = [s for s in shards if s.holds(key)]
        if holders:
            assert chosen in holders
            assert chosen.start == max(s.start for s in holders)  # the newest (narrowest-start) holder
        else:
            below = [s for s in shards if s.start <= key]
            expected_start = max(s.start for s in below) if below else min(s.start for s in shards)
            assert chosen.start == expected_start


def test_a_parent_listed_beside_its_children_loses_to_them() -> None:
    """Mid-split, a listing with the parent and both children routes to the children and reports the overlap."""
    parent = Shard("parent", 0, MAX_HASH_KEY)
    low, high = Shard("low", 0, 2**127 - 1, ("parent",)), Shard("high", 2**127, MAX_HASH_KEY, ("parent",))
    shard_map = fixed_map([parent, low, high])
    assert [shard_map.route(k).shard_id for k in (0, 2**127 - 1, 2**127, MAX_HASH_KEY)] == ["low", "low", "high", "high"]
    assert shard_map.coverage_problem is not None and "overlaps" in shard_map.coverage_problem


def test_a_gap_is_reported_and_its_keys_go_to_the_shard_below() -> None:
    """A listing missing the middle range routes its keys to the shard below and names the gap."""
    shard_map = fixed_map([Shard("low", 0, 99), Shard("high", 200, MAX_HASH_KEY)])
    assert [shard_map.route(k).shard_id for k in (50, 100, 199, 200)] == ["low", "low", "low", "high"]
    assert shard_map.coverage_problem == "hash keys 100..199 are in no open shard (gap before high)"


# --- refreshes ---------------------------------------------------------------------------------


class Lister:
    """Hands out listings in turn (the last one repeats) and counts its calls."""

    def __init__(self, *listings: list[Shard] | Exception) -> None:
        self.listings = list(listings)
        self.calls = 0

    def __call__(self) -> list[Shard]:
        listing = self.listings[min(self.calls, len(self.listings) - 1)]
        self.calls += 1
        if isinstance(listing, Exception):
            raise listing
        return list(listing)


def test_generation_counts_changes_only() -> None:
    """The same shard set twice is no change; a different set bumps the generation once."""
    two = tiling([2**127])
    lister = Lister(tiling([]), tiling([]), two, list(reversed(two)))
    shard_map = ShardMap(lister, refresh_interval_s=60)
    assert [shard_map.refresh("start"), shard_map.refresh("periodic"), shard_map.refresh("misroute"),
            shard_map.refresh("periodic")] == [True, False, True, False]
    assert shard_map.generation == 2
    assert shard_map.shards == tuple(two)
    assert shard_map.get("shard-1") == two[1] and shard_map.get("gone") is None


def test_an_empty_listing_keeps_the_map_but_an_empty_first_listing_raises() -> None:
    """No open shard: at the first refresh a clear error; later the previous map stays and refresh says False."""
    with pytest.raises(ShardMapError, match="no open shard"):
        ShardMap(Lister([]), refresh_interval_s=60).refresh("start")
    shard_map = ShardMap(Lister(tiling([]), []), refresh_interval_s=60)
    shard_map.refresh("start")
    assert shard_map.refresh("periodic") is False
    assert shard_map.route(5).shard_id == "shard-0"
    assert shard_map.last_problem is not None and "no open shard" in shard_map.last_problem


def test_a_failing_listing_keeps_the_map_and_restarts_the_timer() -> None:
    """A lister error propagates, the map stays usable, and the next periodic refresh waits a full interval."""
    now = [0.0]
    shard_map = ShardMap(Lister(tiling([]), ConnectionError("down")), refresh_interval_s=60, clock=lambda: now[0])
    assert shard_map.refresh_due()
    shard_map.refresh("start")
    now[0] = 60.0
    assert shard_map.refresh_due()
    with pytest.raises(ConnectionError):
        shard_map.refresh("periodic")
    assert shard_map.route(1).shard_id == "shard-0"
    assert not shard_map.refresh_due()
    now[0] = 119.9
    assert not shard_map.refresh_due()
    now[0] = 120.0
    assert shard_map.refresh_due()


def test_route_before_any_refresh_raises() -> None:
    """A map never listed has nothing to route to: a clear error rather than a wrong shard."""
    with pytest.raises(ShardMapError, match="never refreshed"):
        ShardMap(Lister(tiling([])), refresh_interval_s=60).route(0)


class SignallingLock:
    """A lock that counts the threads waiting for it, so a test can wait for them without sleeping."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._guard = threading.Lock()
        self.waiting = 0

    def __enter__(self) -> None:
        with self._guard:
            self.waiting += 1
        self._lock.acquire()
        with self._guard:
            self.waiting -= 1

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_refreshes_asked_for_during_a_listing_share_one_listing() -> None:
    """Two threads asking while a listing runs cause one more listing between them, not two, and both see its result."""
    release = threading.Event()
    calls: list[int] = []
    listings = [tiling([]), tiling([2**127])]

    def lister() -> list[Shard]:
        calls.append(1)
        if len(calls) == 1:
            release.wait(WAIT_S)
        return listings[min(len(calls) - 1, 1)]

    shard_map = ShardMap(lister, refresh_interval_s=60)
    lock = SignallingLock()
    shard_map._lock = lock  # type: ignore[assignment]  # observe the waiters
    results: dict[str, bool] = {}
    first = threading.Thread(target=lambda: results.__setitem__("first", shard_map.refresh("start")))
    first.start()
    poll_until(lambda: calls, WAIT_S, "the first listing to begin")
    others = [threading.Thread(target=lambda n=n: results.__setitem__(n, shard_map.refresh("misroute"))) for n in ("b", "c")]
    for thread in others:
        thread.start()
    poll_until(lambda: lock.waiting == 2, WAIT_S, "both threads to wait for the listing")
    release.set()
    for thread in [first, *others]:
        thread.join(WAIT_S)
    assert len(calls) == 2
    assert results == {"first": True, "b": True, "c": True}
    assert shard_map.generation == 2 and len(shard_map.shards) == 2
