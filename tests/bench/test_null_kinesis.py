"""The benchmark's null Kinesis endpoint: routing, counting of KPL aggregates, PUT payload units, limits."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.kpl_count import PUT_PAYLOAD_UNIT_BYTES, count_kpl_records, put_payload_units
from bench.null_kinesis import MAX_HASH_KEY, SHARD_RECORDS_PER_S, STREAM, THROTTLE_CODE, NullKinesis


@pytest.fixture
def endpoint() -> Iterator[NullKinesis]:
    server = NullKinesis(4)
    # A short poll interval: shutdown() waits for it.
    thread = threading.Thread(target=server.serve, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def _client(endpoint: NullKinesis) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint.url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - a dummy for the local endpoint
        config=Config(retries={"max_attempts": 1}),
    )


def _aggregate(records: list[tuple[str, bytes]]) -> bytes:
    aggregator = RecordAggregator()
    for key, data in records:
        assert aggregator.add_user_record(key, data) is None  # everything fits one aggregate
    blob: bytes = aggregator.clear_and_get().get_contents()[2]
    return blob


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=200)), min_size=1, max_size=30))
def test_count_kpl_records_counts_the_user_records_of_any_aggregate(records: list[tuple[str, bytes]]) -> None:
    """An aggregate made by aws-kinesis-agg counts exactly the user records put into it."""
    assert count_kpl_records(_aggregate(records)) == len(records)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_count_kpl_records_never_raises_on_arbitrary_bytes(blob: bytes) -> None:
    """Any bytes, with or without the KPL magic, give a count or None, never an exception."""
    result = count_kpl_records(blob)
    assert result is None or result >= 0
    framed = b"\xf3\x89\x9a\xc2" + blob + hashlib.md5(blob, usedforsecurity=False).digest()
    result = count_kpl_records(framed)
    assert result is None or result >= 0


def test_a_corrupted_aggregate_is_not_counted_as_one() -> None:
    """A flipped byte breaks the MD5 trailer: the record is then one plain record, not an aggregate."""
    blob = bytearray(_aggregate([("a", b"x"), ("b", b"y")]))
    blob[6] ^= 0xFF
    assert count_kpl_records(bytes(blob)) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=100), st.text(min_size=1, max_size=10)), min_size=1, max_size=5))
def test_counted_bytes_are_data_and_key_sizes(entries: list[tuple[bytes, str]]) -> None:
    """The bytes counted from the base64 text equal the decoded data plus the key's UTF-8, whatever the lengths."""
    endpoint = NullKinesis(4)
    endpoint.put([{"Data": base64.b64encode(data).decode(), "PartitionKey": key} for data, key in entries])
    assert endpoint.snapshot()["bytes"] == sum(len(data) + len(key.encode()) for data, key in entries)
    endpoint.server.server_close()


def test_put_payload_units_are_25_kib_chunks() -> None:
    """1 byte and 25,600 bytes are one unit; 25,601 bytes are two."""
    assert [put_payload_units(n) for n in (1, PUT_PAYLOAD_UNIT_BYTES, PUT_PAYLOAD_UNIT_BYTES + 1)] == [1, 1, 2]


def test_routes_by_explicit_hash_key_and_partition_key(endpoint: NullKinesis) -> None:
    """Each entry is answered with the shard whose ListShards range holds its hash key."""
    client = _client(endpoint)
    shards = client.list_shards(StreamName=STREAM)["Shards"]
    assert len(shards) == 4
    assert client.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["OpenShardCount"] == 4
    entries = [
        {"Data": b"d", "PartitionKey": "k", "ExplicitHashKey": str(int(s["HashKeyRange"]["EndingHashKey"]))} for s in shards
    ]
    entries.append({"Data": b"d", "PartitionKey": "author-7"})
    answer = client.put_records(StreamName=STREAM, Records=entries)
    assert [r["ShardId"] for r in answer["Records"][:4]] == [s["ShardId"] for s in shards]
    hash_key = int.from_bytes(hashlib.md5(b"author-7", usedforsecurity=False).digest(), "big")
    expected = next(
        s["ShardId"]
        for s in shards
        if int(s["HashKeyRange"]["StartingHashKey"]) <= hash_key <= int(s["HashKeyRange"]["EndingHashKey"])
    )
    assert answer["Records"][4]["ShardId"] == expected
    assert int(shards[-1]["HashKeyRange"]["EndingHashKey"]) == MAX_HASH_KEY
    stats = endpoint.snapshot()
    assert (stats["kinesis_records"], stats["user_records"], stats["bytes"]) == (5, 5, 4 * 2 + 1 + 8)


def test_counts_user_records_inside_aggregates_and_their_payload_units(endpoint: NullKinesis) -> None:
    """An aggregate of 30 records of 1 KB is one Kinesis record, 30 user records and 2 PUT payload units."""
    blob = _aggregate([(f"user-{i}", b"x" * 1024) for i in range(30)])
    _client(endpoint).put_records(StreamName=STREAM, Records=[{"Data": blob, "PartitionKey": "user-0"}])
    stats = endpoint.snapshot()
    assert (stats["kinesis_records"], stats["user_records"], stats["aggregates"]) == (1, 30, 1)
    assert stats["put_payload_units"] == -(-(len(blob) + len("user-0")) // PUT_PAYLOAD_UNIT_BYTES) == 2


def test_limits_refuse_what_exceeds_a_shards_records_per_second() -> None:
    """With limits on, a shard takes 1,000 records in any rolling second; the rest are refused as throttled,
    and a second later it takes records again."""
    now = [100.0]
    endpoint = NullKinesis(4, limits=True, clock=lambda: now[0])
    entries = [{"Data": "ZA==", "PartitionKey": "k", "ExplicitHashKey": "0"}] * 600  # hash key 0: the first shard
    first, second = endpoint.put(entries), endpoint.put(entries)
    now[0] += 0.5
    third = endpoint.put(entries)  # the first two requests are still inside the rolling second
    now[0] += 0.6
    fourth = endpoint.put(entries)  # they have left it
    refused = [sum("ErrorCode" in r for r in answer) for answer in (first, second, third, fourth)]
    assert refused == [0, 200, 600, 0]
    assert all(r["ErrorCode"] == THROTTLE_CODE for r in second[-200:])
    assert "ErrorCode" not in second[SHARD_RECORDS_PER_S - 600 - 1]
    other_shard = endpoint.put([{"Data": "ZA==", "PartitionKey": "k", "ExplicitHashKey": str(MAX_HASH_KEY)}] * 600)
    assert not any("ErrorCode" in r for r in other_shard)  # a throttled shard never holds back another
    stats = endpoint.snapshot()
    assert (stats["kinesis_records"], stats["throttled_entries"]) == (600 + 400 + 600 + 600, 800)
    assert stats["per_shard"] == [1600, 0, 0, 600]
    endpoint.server.server_close()


def test_a_chunked_body_is_read_whole(endpoint: NullKinesis) -> None:
    """A PutRecords body sent with chunked transfer encoding is answered like one with a length."""
    import http.client
    import json

    body = json.dumps({"StreamName": STREAM, "Records": [{"Data": "ZA==", "PartitionKey": "k"}] * 3}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", endpoint.server.server_address[1], timeout=5)
    headers = {"X-Amz-Target": "Kinesis_20131202.PutRecords", "Content-Type": "application/x-amz-json-1.1"}
    connection.request("POST", "/", body=iter([body[:10], body[10:]]), headers=headers, encode_chunked=True)
    answer = json.loads(connection.getresponse().read())
    connection.close()
    assert answer["FailedRecordCount"] == 0 and len(answer["Records"]) == 3
    assert endpoint.snapshot()["kinesis_records"] == 3
