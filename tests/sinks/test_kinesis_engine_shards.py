"""The engine and the stream's shards: periodic map refreshes, a closed shard's ResourceNotFound, per-shard rate
limits that keep throttling rare (in-process multi-shard transport)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from sinks.base import Deadline
from sinks.kinesis import KinesisSink
from sinks.kinesis.queues import WireItem
from sinks.kinesis.service import CallFailed, FailureKind
from sinks.kinesis.shards import Shard
from tests.sinks.conftest import Completions, FakeTransport, RecordingEvents, deliver, shards_of, tweet_record, wire_hash_key

WAIT_S = 10.0
RNF = "ResourceNotFoundException"
PTEE = "ProvisionedThroughputExceededException"
EngineSink = Callable[..., KinesisSink]
PARENT = Shard("shardId-000000000000", 0, 2**128 - 1)
CHILDREN = [Shard("shardId-000000000001", 0, 2**127 - 1, (PARENT.shard_id,)),
            Shard("shardId-000000000002", 2**127, 2**128 - 1, (PARENT.shard_id,))]


def wait_for_event(events: RecordingEvents, name: str, match: dict[str, Any]) -> None:
    """Poll the recorded events against a deadline until one named `name` carries `match`."""
    end = time.monotonic() + WAIT_S
    while time.monotonic() < end:
        if any(match.items() <= e.items() for e in events.named(name)):
            return
        time.sleep(0.01)
    raise AssertionError(f"no {name} event with {match}: {events.named(name)}")


def test_the_periodic_refresh_follows_a_split_before_any_misroute(engine_sink: EngineSink, events: RecordingEvents) -> None:
    """refresh_interval 1 s: after the stream splits, a 'periodic' refresh finds the children; records submitted
    then are routed to them (no misroute) and stored on the shard their hash key belongs to."""
    transport = FakeTransport([PARENT])
    sink = engine_sink(transport, linger=0, shard_map={"refresh_interval": 1})
    completions = Completions()
    sink.start(completions)
    with transport.lock:
        transport.shards = CHILDREN
    wait_for_event(events, "shard_map_refreshed", {"reason": "periodic", "changed": True, "shards": 2})
    entries = [sink.prepare(tweet_record(f"after split {i}", author_id=str(i))) for i in range(40)]
    assert sink.submit(entries, Deadline()) == 40
    sink.finish(Deadline(time.monotonic() + WAIT_S))
    assert len(completions.result.sent) == 40
    assert events.named("records_misrouted") == []
    assert {e.shard_id for e in entries} == {s.shard_id for s in CHILDREN}
    for shard in CHILDREN:
        assert all(shard.start <= wire_hash_key(item) <= shard.end for item in transport.stored[shard.shard_id])


def test_resource_not_found_on_a_closed_shard_refreshes_the_map_instead_of_holding(
    engine_sink: EngineSink, events: RecordingEvents
) -> None:
    """The first answer is ResourceNotFound while the map is stale: a 'closed_shard' refresh finds new shards,
    so the records go again at once; the sink never reports itself unhealthy and delivers everything."""
    answers = iter([CallFailed(RNF, "Shard shardId-000000000000 is closed", FailureKind.PERMANENT, 0.001)])

    def first_refused(_records: list[WireItem], _landing: list[str]) -> Any:
        return next(answers, None)

    transport = FakeTransport(CHILDREN, step=first_refused, listed=[PARENT])
    sink = engine_sink(transport, linger=0)
    entries = [sink.prepare(tweet_record(f"closed {i}", author_id=str(i))) for i in range(10)]
    completions = Completions()
    sink.start(completions)
    transport.listed = None
    sink.submit(entries, Deadline())
    sink.finish(Deadline(time.monotonic() + WAIT_S))
    assert len(completions.result.sent) == 10
    assert {"reason": "closed_shard", "shards": 2, "changed": True} in events.named("shard_map_refreshed")
    assert events.named("sink_health") == []
    assert events.named("records_retried") == []  # again at once: no backoff for a stale map
    assert all(e.attempts == 1 for e in entries)  # the refused try was no attempt of the records


def test_resource_not_found_with_an_unchanged_map_holds_and_reports_unhealthy(
    engine_sink: EngineSink, events: RecordingEvents
) -> None:
    """ResourceNotFound and the shards are what the map says (the stream itself is gone): held with backoff,
    unhealthy then healthy again, never dead-lettered even with max_attempts 1."""
    answers = iter([CallFailed(RNF, "Stream not found", FailureKind.PERMANENT, 0.001)] * 2)

    def missing_twice(_records: list[WireItem], _landing: list[str]) -> Any:
        return next(answers, None)

    transport = FakeTransport(shards_of(1), step=missing_twice)
    sink = engine_sink(transport, linger=0, retry={"max_attempts": 1})
    entries = [sink.prepare(tweet_record(f"held {i}", author_id=str(i))) for i in range(3)]
    result = deliver(sink, entries, WAIT_S)
    assert len(result.sent) == 3 and len(transport.calls) == 3
    assert [(h["healthy"], h["reason"]) for h in events.named("sink_health")] == [(False, RNF), (True, RNF)]


def test_per_shard_limits_keep_throttled_attempts_rare(engine_sink: EngineSink, events: RecordingEvents) -> None:
    """Two shards that each take 200 records/s (a token bucket in the fake, refusing the excess with
    ProvisionedThroughputExceeded): with shard_limits at the same rate, 1,000 records are delivered with at
    most 0.05 throttled attempts per record."""
    rate = 200.0
    lock = threading.Lock()
    buckets = {s.shard_id: [rate, time.monotonic()] for s in shards_of(2)}

    def enforce(_records: list[WireItem], landing: list[str]) -> dict[int, str]:
        refused = {}
        with lock:
            now = time.monotonic()
            for bucket in buckets.values():
                bucket[0] = min(rate, bucket[0] + (now - bucket[1]) * rate)
                bucket[1] = now
            for position, shard_id in enumerate(landing):
                if buckets[shard_id][0] >= 1:
                    buckets[shard_id][0] -= 1
                else:
                    refused[position] = PTEE
        return refused

    transport = FakeTransport(shards_of(2), step=enforce)
    sink = engine_sink(transport, linger=0.01, shard_limits={"records_per_second": rate})
    entries = [sink.prepare(tweet_record(f"limited {i}", author_id=str(i))) for i in range(1000)]
    result = deliver(sink, entries, WAIT_S * 2)
    assert len(result.sent) == 1000
    throttled = sum(e["records"] for e in events.named("shard_throttled"))
    assert throttled / 1000 <= 0.05, f"{throttled} throttled attempts"
    assert sorted(transport.stored_data()) == sorted(e.data for e in entries)


def test_a_failing_listshards_falls_back_to_one_unlimited_stand_in_shard(engine_sink: EngineSink) -> None:
    """ListShards refused (e.g. no kinesis:ListShards in the policy): the sink still delivers everything, as
    through one shard without a rate limit, and takes the real map once a listing works."""
    transport = FakeTransport(shards_of(2))
    calls = {"n": 0}

    def denied_then_listed() -> list[Shard]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no ListShards"}}, "ListShards")
        return transport.list_shards()

    sink = engine_sink(transport, linger=0)
    sink._lister = denied_then_listed
    entries = [sink.prepare(tweet_record(f"fallback {i}", author_id=str(i))) for i in range(50)]
    result = deliver(sink, entries, WAIT_S)
    assert len(result.sent) == 50
    assert [s.shard_id for s in sink.shard_map.shards] == ["*"]
    assert sorted(transport.stored_data()) == sorted(e.data for e in entries)
    assert sink._refresh("periodic") and len(sink.shard_map.shards) == 2


def test_a_lone_record_goes_unaggregated(engine_sink: EngineSink) -> None:
    """aggregation on, one record for its shard: it is sent as itself, not framed as a one-member aggregate."""
    transport = FakeTransport(shards_of(1))
    sink = engine_sink(transport, linger=0, aggregation={"enabled": True})
    entry = sink.prepare(tweet_record("alone"))
    result = deliver(sink, [entry], WAIT_S)
    assert result.sent == [entry]
    assert transport.calls == [[entry]]
