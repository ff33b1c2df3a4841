"""The delivery engine with an in-process multi-shard transport: shards do not hold each other back, several
requests are truly in flight, per-record budgets, ordered mode, aggregation per shard, misroutes and finish."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from sinks.base import Deadline
from sinks.kinesis import KinesisSink
from sinks.kinesis.aggregate import Aggregate
from sinks.kinesis.engine import UNSENT_AT_SHUTDOWN
from sinks.kinesis.queues import WireItem
from sinks.kinesis.records import KinesisEntry
from sinks.kinesis.retry import REASON_RETRIES_EXHAUSTED
from sinks.kinesis.service import CallFailed, FailureKind
from sinks.kinesis.shards import Shard
from tests.sinks.conftest import Completions, FakeTransport, RecordingEvents, deliver, shards_of, tweet_record

PTEE = "ProvisionedThroughputExceededException"
WAIT_S = 10.0  # bound for every wait on an event below; never reached when the behaviour is right
# Seeded so that the first full-jitter delay of a 30 s initial backoff is ~28.7 s (see test_kinesis_deadline).
LONG_BACKOFF = {"initial_backoff": 30.0, "max_backoff": 60.0}
LONG_BACKOFF_SEED = 2

EngineSink = Callable[..., KinesisSink]


def entries_by_shard(sink: KinesisSink, shards: list[Shard], per_shard: int, keys_per_shard: int = 0) -> list[list[KinesisEntry]]:
    """Prepared entries, `per_shard` for each shard (by their MD5 hash key); `keys_per_shard` > 0 reuses that
    many partition keys per shard, in turn, so keys repeat."""
    found: list[list[KinesisEntry]] = [[] for _ in shards]
    keys: list[list[str]] = [[] for _ in shards]
    i = 0
    while any(len(group) < per_shard for group in found):
        i += 1
        probe = sink.prepare(tweet_record(author_id=f"author-{i}"))
        index = next(n for n, s in enumerate(shards) if s.start <= probe.hash_key <= s.end)
        if keys_per_shard and len(keys[index]) < keys_per_shard:
            keys[index].append(probe.partition_key)
        if len(found[index]) >= per_shard or (keys_per_shard and len(keys[index]) < keys_per_shard):
            continue
        n = len(found[index])
        author = keys[index][n % keys_per_shard] if keys_per_shard else probe.partition_key
        record = tweet_record(f"shard {index} record {n}", author_id=author, tweet_id=f"{index}-{n}", origin=f"s{index}:{n}")
        found[index].append(sink.prepare(record))
    return found


def throttle_shard(shard: Shard) -> Callable[[list[WireItem], list[str]], dict[int, str]]:
    """A step refusing (throttling) every record that lands on `shard`."""
    return lambda _records, landing: {i: PTEE for i, s in enumerate(landing) if s == shard.shard_id}


def test_a_backing_off_shard_does_not_hold_back_another_shards_records(engine_sink: EngineSink, events: RecordingEvents) -> None:
    """Shard 0 is throttled and backs off ~28 s; records for shard 1 submitted meanwhile are delivered at once
    (the old one-batch loop slept with everything); at the deadline shard 0's records are unsent."""
    shards = shards_of(2)
    transport = FakeTransport(shards, step=throttle_shard(shards[0]))
    sink = engine_sink(transport, seed=LONG_BACKOFF_SEED, retry=LONG_BACKOFF, linger=0)
    first, second = entries_by_shard(sink, shards, 5)
    completions = Completions()
    sink.start(completions)
    assert sink.submit(first, Deadline()) == 5
    assert events.retry_announced.wait(WAIT_S)
    [retry] = events.named("records_retried")
    assert retry["delay_s"] > 20 and retry["records"] == 5
    assert sink.submit(second, Deadline()) == 5
    completions.wait_for(lambda: len(completions.result.sent) == 5, WAIT_S, "shard 1's records sent")
    assert sorted(map(id, completions.result.sent)) == sorted(map(id, second))
    sink.finish(Deadline(time.monotonic()))
    assert sorted(map(id, completions.result.unsent)) == sorted(map(id, first))
    assert completions.details == [UNSENT_AT_SHUTDOWN]
    assert [e["shard_id"] for e in events.named("shard_throttled")] == [shards[0].shard_id]
    assert sorted(d.data for d in transport.stored[shards[1].shard_id]) == sorted(e.data for e in second)


def test_several_requests_are_in_flight_at_once(engine_sink: EngineSink, events: RecordingEvents) -> None:
    """With in_flight 4, the transport sees four requests waiting together (a barrier of 4 that would break,
    failing the requests, if they came one at a time); every record ends sent."""
    barrier = threading.Barrier(4, timeout=WAIT_S)

    def hold_until_four(records: list[WireItem], _landing: list[str]) -> None:
        if barrier.broken:
            return None
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return None

    shards = shards_of(4)
    transport = FakeTransport(shards, step=hold_until_four)
    sink = engine_sink(transport, in_flight=4, max_batch_records=10, linger=0)
    entries = [e for group in entries_by_shard(sink, shards, 10) for e in group]
    result = deliver(sink, entries)
    assert not barrier.broken
    assert len(result.sent) == 40
    assert max(e["count"] for e in events.named("requests_in_flight")) == 4
    assert sorted(transport.stored_data()) == sorted(e.data for e in entries)


def test_the_age_budget_dead_letters_a_record_that_keeps_failing(engine_sink: EngineSink) -> None:
    """retry.max_age 0.2 s with a shard that always throttles: the record is dead-lettered (retries_exhausted,
    detail with attempts, age and the last code) after several attempts, the other shard's record is sent."""
    shards = shards_of(2)
    transport = FakeTransport(shards, step=throttle_shard(shards[0]))
    sink = engine_sink(transport, linger=0, retry={"max_age": 0.2, "initial_backoff": 0.01, "max_backoff": 0.02},
                       shard_limits={"adaptive": False})
    doomed, fine = entries_by_shard(sink, shards, 1)
    result = deliver(sink, doomed + fine, WAIT_S)
    assert result.sent == fine
    [(entry, reason, detail)] = result.failed
    assert entry is doomed[0] and reason == REASON_RETRIES_EXHAUSTED
    assert entry.attempts > 2 and f"{entry.attempts} attempts" in detail and PTEE in detail
    age = float(detail.split(" in ")[1].split("s ")[0])
    assert 0.2 <= age < WAIT_S


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
def test_ordered_mode_keeps_each_keys_order_under_failures(engine_sink: EngineSink, aggregate: bool) -> None:
    """ordered: 30 % of entries (or aggregates) refused at random: per partition key, the stream holds the
    records in submission order, each once."""
    rng = random.Random(5)
    lock = threading.Lock()

    def flaky(records: list[WireItem], _landing: list[str]) -> dict[int, str]:
        with lock:
            return {i: rng.choice([PTEE, "InternalFailure"]) for i in range(len(records)) if rng.random() < 0.3}

    shards = shards_of(2)
    transport = FakeTransport(shards, step=flaky)
    sink = engine_sink(transport, ordered=True, linger=0, max_batch_records=20,
                       aggregation={"enabled": aggregate, "max_records": 7})
    groups = entries_by_shard(sink, shards, 60, keys_per_shard=4)
    entries = [e for pair in zip(*groups, strict=True) for e in pair]
    result = deliver(sink, entries, WAIT_S * 3)
    assert len(result.sent) == len(entries)
    expected: dict[str, list[bytes]] = {}
    for e in entries:
        expected.setdefault(e.partition_key, []).append(e.data)
    stored: dict[str, list[bytes]] = {}
    for items in transport.stored.values():
        for item in items:
            for m in item.members if isinstance(item, Aggregate) else [item]:
                stored.setdefault(m.partition_key, []).append(m.data)
    assert stored == expected
    if not aggregate:
        assert all(len({r.partition_key for r in call}) == len(call) for call in transport.calls)


def test_aggregates_carry_records_of_one_shard_only(engine_sink: EngineSink, events: RecordingEvents) -> None:
    """aggregation: 4 shards, 400 records: every aggregate's members hash into the shard it landed on, the
    stream holds each record once, and records_aggregated counts users per Kinesis record."""
    shards = shards_of(4)
    transport = FakeTransport(shards)
    sink = engine_sink(transport, linger=0.05, aggregation={"enabled": True, "max_records": 50})
    entries = [e for group in entries_by_shard(sink, shards, 100) for e in group]
    random.Random(1).shuffle(entries)
    result = deliver(sink, entries, WAIT_S)
    assert len(result.sent) == 400
    ranges = {s.shard_id: s for s in shards}
    for shard_id, items in transport.stored.items():
        for item in items:
            members = item.members if isinstance(item, Aggregate) else [item]  # a lone record goes as itself
            assert 1 <= len(members) <= 50
            shard = ranges[shard_id]
            assert all(shard.start <= m.hash_key <= shard.end for m in members)
    assert sorted(transport.stored_data()) == sorted(e.data for e in entries)
    aggregated = events.named("records_aggregated")
    assert sum(a["user_records"] for a in aggregated) == 400
    assert sum(a["kinesis_records"] for a in aggregated) < 400 / 10


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
def test_a_stale_map_is_refreshed_on_misroutes_and_records_reach_their_shards(
    engine_sink: EngineSink, events: RecordingEvents, aggregate: bool
) -> None:
    """The stream split before the map was listed (the first ListShards answers the parent): records land on
    the children, records_misrouted and a 'child_shards' refresh follow, later requests route to the children;
    aggregated, members outside the landing shard go again (duplicates_possible) so every record is stored
    on the shard its hash key belongs to."""
    parent = Shard("shardId-000000000000", 0, 2**128 - 1)
    children = [Shard("shardId-000000000001", 0, 2**127 - 1, (parent.shard_id,)),
                Shard("shardId-000000000002", 2**127, 2**128 - 1, (parent.shard_id,))]
    transport = FakeTransport(children, listed=[parent])
    sink = engine_sink(transport, linger=0, max_batch_records=50, aggregation={"enabled": aggregate, "max_records": 10})
    groups = entries_by_shard(sink, children, 100)
    entries = [e for pair in zip(*groups, strict=True) for e in pair]
    completions = Completions()
    sink.start(completions)
    transport.listed = None  # ListShards now tells the truth
    assert sink.submit(entries, Deadline()) == len(entries)
    sink.finish(Deadline(time.monotonic() + WAIT_S))
    assert len(completions.result.sent) == len(entries)
    assert events.named("records_misrouted")
    # the children were unknown to the map: the refresh says why
    assert {"reason": "child_shards", "shards": 2, "changed": True} in events.named("shard_map_refreshed")
    placed: dict[bytes, set[str]] = {}
    for shard_id, items in transport.stored.items():
        shard = next(s for s in children if s.shard_id == shard_id)
        for item in items:
            for m in item.members if isinstance(item, Aggregate) else [item]:
                if shard.start <= m.hash_key <= shard.end:
                    placed.setdefault(m.data, set()).add(shard_id)
    assert sorted(placed) == sorted(e.data for e in entries)  # each record on its own shard
    for e in entries:
        assert e.shard_id in placed[e.data]
    if aggregate:
        assert [d["reason"] for d in events.named("duplicates_possible")] and all(
            d["reason"] == "misrouted_aggregate" for d in events.named("duplicates_possible"))
    last = transport.calls[-1]
    assert all(transport.landing(item) == sink.shard_map.route(int(item.explicit_hash_key or 0) if aggregate
                                                               else item.hash_key).shard_id for item in last)  # type: ignore[union-attr]


def test_finish_reports_requests_still_in_flight_at_the_deadline_once(engine_sink: EngineSink, events: RecordingEvents) -> None:
    """A request whose answer does not come: finish reports its records unsent once (after the transport's own
    timeouts), and the late answer, when it comes, reports nothing again."""
    release = threading.Event()
    answered = threading.Event()

    def stall(_records: list[WireItem], _landing: list[str]) -> None:
        release.wait(WAIT_S)
        answered.set()

    transport = FakeTransport(shards_of(1), step=stall)
    sink = engine_sink(transport, linger=0, connect_timeout=0.1, read_timeout=0.2)
    entries = [sink.prepare(tweet_record(f"stalled {i}", author_id=str(i))) for i in range(5)]
    completions = Completions()
    sink.start(completions)
    sink.submit(entries, Deadline())
    poll = time.monotonic() + WAIT_S
    while not transport.calls and time.monotonic() < poll:
        time.sleep(0.01)
    assert transport.calls
    sink.finish(Deadline(time.monotonic() + 0.1))
    assert sorted(map(id, completions.result.unsent)) == sorted(map(id, entries))
    release.set()
    assert answered.wait(WAIT_S)
    for thread in threading.enumerate():  # the sender settles the late answer, then ends: wait for that
        if thread.name.startswith("kinesis-sender"):
            thread.join(WAIT_S)
    assert completions.reported() == 5 and not completions.result.sent


def test_a_late_answer_before_the_bound_still_counts_as_sent(engine_sink: EngineSink) -> None:
    """The deadline passes while a request is on the wire; its answer (within the transport's timeouts)
    accepts the records: they are sent, not unsent."""
    started = threading.Event()

    def slow(_records: list[WireItem], _landing: list[str]) -> None:
        started.set()
        time.sleep(0.3)

    transport = FakeTransport(shards_of(1), step=slow)
    sink = engine_sink(transport, linger=0)
    entries = [sink.prepare(tweet_record(f"slow {i}", author_id=str(i))) for i in range(3)]
    completions = Completions()
    sink.start(completions)
    sink.submit(entries, Deadline())
    assert started.wait(WAIT_S)
    sink.finish(Deadline(time.monotonic()))
    assert sorted(map(id, completions.result.sent)) == sorted(map(id, entries))


def test_a_lost_answer_is_resent_and_counted_as_a_possible_duplicate(engine_sink: EngineSink, events: RecordingEvents) -> None:
    """A read timeout after sending (maybe_delivered): the records go again, duplicates_possible counts them."""
    calls = iter([CallFailed("ReadTimeoutError", "read timeout", FailureKind.NETWORK, 0.2, maybe_delivered=True)])

    def once(_records: list[WireItem], _landing: list[str]) -> Any:
        return next(calls, None)

    transport = FakeTransport(shards_of(1), step=once)
    sink = engine_sink(transport, linger=0)
    entries = [sink.prepare(tweet_record(f"lost {i}", author_id=str(i))) for i in range(4)]
    result = deliver(sink, entries, WAIT_S)
    assert len(result.sent) == 4 and len(transport.calls) == 2
    assert events.named("duplicates_possible") == [{"records": 4, "reason": "answer_lost"}]
    assert all(e.attempts == 2 for e in entries)
    assert events.named("records_settled") == [{"attempts": {2: 4}}]


def test_submit_blocks_at_the_sinks_maximum_and_returns_early_at_the_deadline(engine_sink: EngineSink) -> None:
    """With every request stalled, submit takes at most the sink's maximum and returns the count it took when
    its deadline passes; finish then reports every taken entry once."""
    release = threading.Event()
    def stall(_records: list[WireItem], _landing: list[str]) -> None:
        release.wait(WAIT_S)

    transport = FakeTransport(shards_of(1), step=stall)
    sink = engine_sink(transport, linger=0, in_flight=1, max_batch_records=5, connect_timeout=0.1, read_timeout=0.2)
    entries = [sink.prepare(tweet_record(f"many {i}", author_id=str(i))) for i in range(200)]
    completions = Completions()
    sink.start(completions)
    taken = sink.submit(entries, Deadline(time.monotonic() + 0.3))
    assert 0 < taken < 200
    release.set()
    sink.finish(Deadline(time.monotonic() + WAIT_S))
    assert completions.reported() == taken
    assert len(completions.result.sent) == taken


class _BrokenReporting(RecordingEvents):
    """An observer whose put_requested raises: a bug that kills the sender thread settling that request."""

    def put_requested(self, **_kwargs: Any) -> None:
        raise RuntimeError("observer bug")


def test_a_dead_sender_thread_is_raised_to_the_daemon_and_every_record_still_ends_once(engine_sink: EngineSink) -> None:
    """A sender thread dying of a bug makes submit and finish raise SinkThreadDied (the daemon stops loudly), and
    finish still reports every submitted record exactly once (sent or unsent), none forgotten."""
    from sinks.base import SinkThreadDied

    shards = shards_of(1)
    transport = FakeTransport(shards)
    # Short timeouts: finish waits that long for the answer the dead sender will never settle.
    sink = engine_sink(transport, in_flight=1, max_batch_records=10, linger=0, connect_timeout=0.2, read_timeout=0.3)
    sink.events = _BrokenReporting()
    sink._engine = None  # built at start with the observer above
    entries = [e for group in entries_by_shard(sink, shards, 30) for e in group]
    completions = Completions()
    sink.start(completions)
    deadline = Deadline(time.monotonic() + WAIT_S)
    taken = sink.submit(entries[:10], deadline)
    with pytest.raises(SinkThreadDied, match="observer bug"):
        end = time.monotonic() + WAIT_S
        while time.monotonic() < end:
            taken += sink.submit(entries[taken : taken + 1], deadline)
            time.sleep(0.01)
    with pytest.raises(SinkThreadDied):
        sink.finish(Deadline(time.monotonic() + 1.0))
    reported = completions.result
    assert len(reported.sent) + len(reported.failed) + len(reported.unsent) == taken
