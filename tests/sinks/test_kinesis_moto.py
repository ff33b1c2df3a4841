"""The Kinesis sink against moto's Kinesis: records written through the sink read back byte for byte."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest

from sinks.base import Record, SinkUnavailable
from sinks.kinesis import KinesisSink
from tests.sinks.conftest import REGION, RecordingEvents, assert_accounted, deliver, tweet_record

pytestmark = pytest.mark.slow

CHECK_TIMEOUT_S = 5.0
SHARDS = 2  # more than one, so the check that each key landed in its MD5 hash range means something


@pytest.fixture
def stream(moto_url: str) -> Iterator[tuple[str, Any]]:
    """A fresh stream (unique name: moto's state is process-wide) and a client to read it."""
    # Credentials come from the dummy AWS environment of conftest.py, like the sink's.
    client = boto3.client("kinesis", endpoint_url=moto_url, region_name=REGION)
    name = f"sink-test-{uuid.uuid4().hex[:8]}"
    client.create_stream(StreamName=name, ShardCount=SHARDS)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
    yield name, client
    client.delete_stream(StreamName=name)


def read_back(client: Any, name: str) -> dict[str, list[tuple[bytes, str]]]:
    """Every record of every shard, from the start, as (data, partition key), by shard id."""
    found: dict[str, list[tuple[bytes, str]]] = {}
    for shard in client.list_shards(StreamName=name)["Shards"]:
        iterator = client.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        records: list[tuple[bytes, str]] = []
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=1000)
            records += [(r["Data"], r["PartitionKey"]) for r in page["Records"]]
            iterator = page.get("NextShardIterator") if page["Records"] else None
        found[shard["ShardId"]] = records
    return found


def hash_ranges(client: Any, name: str) -> dict[str, tuple[int, int]]:
    return {
        s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in client.list_shards(StreamName=name)["Shards"]
    }


def varied_records() -> list[Record]:
    """Tweets in several scripts with emoji, numeric and non-Latin and over-long ids, and keyless binary data."""
    texts = ["Привет, мир", "こんにちは世界 🌸", "مرحبا بالعالم", "שלום עולם", "emoji 👩‍👩‍👧‍👦🏳️‍🌈✨", "Ελληνικά", "plain ascii"]
    records = [tweet_record(text, author_id=str(1000 + i), tweet_id=str(i)) for i, text in enumerate(texts)]
    records.append(tweet_record("numeric id", author_id=2244994945))
    records.append(tweet_record("non-Latin key", author_id="作者😀"))
    records.append(tweet_record("long key", author_id="ä" * 300))
    records.append(Record(b"\x00\xff\xfe binary \xf0\x9f\x98\x80", None, "test", "test:binary"))
    return records


def test_records_arrive_intact_with_their_partition_keys(
    moto_url: str, stream: tuple[str, Any], make_sink: Callable[..., KinesisSink], events: RecordingEvents
) -> None:
    """A batch written through the sink reads back with the same bytes and keys, each key in its MD5 hash range."""
    name, client = stream
    sink = make_sink(moto_url, stream=name, region=REGION)
    records = varied_records()
    batch = [sink.prepare(r) for r in records]
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert sorted(map(id, result.sent)) == sorted(map(id, batch))
    assert sorted((e["result"], e["accepted"]) for e in events.named("put_requested")) in (
        [("success", len(batch))],  # one request, or one per shard: both are fine
        sorted(("success", n) for n in _per_shard_counts(batch)),
    )

    stored = read_back(client, name)
    expected = sorted((r.data, e.partition_key) for r, e in zip(records, batch, strict=True))
    assert sorted(pair for shard in stored.values() for pair in shard) == expected

    keys = {e.partition_key for e in batch}
    long_key = hashlib.sha256(("ä" * 300).encode()).hexdigest()  # over 256 characters: hashed whole, not cut
    assert {"2244994945", "作者😀", long_key, hashlib.md5(records[-1].data, usedforsecurity=False).hexdigest()} <= keys

    ranges = hash_ranges(client, name)
    for entry in batch:  # each entry knows where it went, and it is there
        assert (entry.record.data, entry.partition_key) in stored[entry.shard_id or ""]
    for shard_id, pairs in stored.items():
        low, high = ranges[shard_id]
        for _, key in pairs:
            assert low <= int(hashlib.md5(key.encode("utf-8"), usedforsecurity=False).hexdigest(), 16) <= high


def _per_shard_counts(batch: list[Any]) -> list[int]:
    counts: dict[str, int] = {}
    for entry in batch:
        counts[entry.shard_id] = counts.get(entry.shard_id, 0) + 1
    return list(counts.values())


def test_the_start_up_check_passes_for_the_stream_and_names_a_mistyped_one(
    moto_url: str, stream: tuple[str, Any], make_sink: Callable[..., KinesisSink]
) -> None:
    """Against moto: the real stream passes the check; a mistyped name fails it with stream, region, endpoint
    and moto's ResourceNotFoundException."""
    name, _client = stream
    make_sink(moto_url, stream=name, region=REGION).check(CHECK_TIMEOUT_S)
    with pytest.raises(SinkUnavailable) as raised:
        make_sink(moto_url, stream=f"{name}-typo", region=REGION).check(CHECK_TIMEOUT_S)
    message = str(raised.value)
    for part in (repr(f"{name}-typo"), REGION, moto_url, "ResourceNotFoundException"):
        assert part in message
