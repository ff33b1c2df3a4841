"""A stream of several shards: each shard has its own batches, order and failures, as with Lambda's mapping."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest

from tests.embedded.event_source_mapping.conftest import RecordingFunction, RunnerFactory, Stream, wait_until

pytestmark = pytest.mark.slow

SHARDS = 2


class ShardedStream(Stream):
    """A stream whose records are routed to a chosen shard with ExplicitHashKey."""

    def put_to(self, shard_id: str, count: int, prefix: str) -> list[str]:
        start = {
            s["ShardId"]: s["HashKeyRange"]["StartingHashKey"] for s in self.kinesis.list_shards(StreamName=self.name)["Shards"]
        }
        seqs = []
        for i in range(count):
            reply = self.kinesis.put_record(
                StreamName=self.name, PartitionKey=f"{prefix}-key", Data=f"{prefix}{i}".encode(), ExplicitHashKey=start[shard_id]
            )
            assert reply["ShardId"] == shard_id
            seqs.append(reply["SequenceNumber"])
        return seqs


@pytest.fixture
def sharded(kinesis: Any) -> ShardedStream:
    name = f"runner-shards-{uuid.uuid4().hex[:12]}"
    kinesis.create_stream(StreamName=name, ShardCount=SHARDS)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.05, "MaxAttempts": 100})
    return ShardedStream(kinesis, name)


def _shard_of(event: dict[str, Any]) -> set[str]:
    return {r["eventID"].split(":")[0] for r in event["Records"]}


def test_each_invocation_holds_one_shards_records_in_order(make_runner: RunnerFactory, sharded: ShardedStream) -> None:
    """Batches never mix shards; each record's eventID names its own shard; each shard's records come in order."""
    first = sharded.put_to("shardId-000000000000", 4, "a")
    second = sharded.put_to("shardId-000000000001", 3, "b")
    h = make_runner(stream_name=sharded.name, settings={"batch_size": 100})
    wait_until(lambda: h.function.delivered() == 7, "seven deliveries")
    by_shard: dict[str, list[str]] = {}
    for event in h.function.events:
        [shard] = _shard_of(event)
        by_shard.setdefault(shard, []).extend(r["kinesis"]["sequenceNumber"] for r in event["Records"])
    assert by_shard == {"shardId-000000000000": first, "shardId-000000000001": second}
    assert h.runner.stats.shards_started == SHARDS


def test_a_busy_shard_does_not_hold_back_another(make_runner: RunnerFactory, sharded: ShardedStream) -> None:
    """While one shard's invocation is blocked, the other shard's records are delivered; both finish after."""
    release = threading.Event()

    def behaviour(records: list[dict[str, Any]], _: int) -> None:
        if records[0]["eventID"].startswith("shardId-000000000000"):
            release.wait(10)

    sharded.put_to("shardId-000000000000", 2, "slow")
    h = make_runner(RecordingFunction(behaviour), stream_name=sharded.name)
    try:
        wait_until(lambda: h.function.delivered() == 2, "the blocked shard's invocation")
        other = sharded.put_to("shardId-000000000001", 3, "fast")
        wait_until(lambda: h.runner.stats.records_succeeded == 3, "the other shard's records, while the first is blocked")
        assert [seq for batch in h.function.batches[1:] for seq in batch] == other
    finally:
        release.set()
    wait_until(lambda: h.runner.stats.records_succeeded == 5, "both shards done")


def test_a_failing_shard_is_retried_alone(make_runner: RunnerFactory, sharded: ShardedStream) -> None:
    """Retries of one shard's failing batch re-send only that shard's records; the other shard succeeds once."""

    def behaviour(records: list[dict[str, Any]], _: int) -> None:
        if any(r["eventID"].startswith("shardId-000000000000") for r in records):
            raise RuntimeError("boom")

    bad = sharded.put_to("shardId-000000000000", 2, "bad")
    good = sharded.put_to("shardId-000000000001", 2, "good")
    h = make_runner(RecordingFunction(behaviour), stream_name=sharded.name, settings={"maximum_retry_attempts": 1})
    wait_until(lambda: len(h.failures) == 1 and h.runner.stats.records_succeeded == 2, "one shard sent on, one done")
    assert sorted(h.function.batches) == sorted([bad, bad, good])
    info = h.failures[0]["KinesisBatchInfo"]
    assert (info["shardId"], info["startSequenceNumber"], info["endSequenceNumber"]) == ("shardId-000000000000", bad[0], bad[1])
