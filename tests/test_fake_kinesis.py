"""Self-tests of tests/fake_kinesis.py: boto3 and a hand-made client against each operation and each fault."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.fake_kinesis import (
    INTERNAL_FAILURE,
    KPL_MAGIC,
    THROTTLED,
    CallError,
    EntryErrors,
    FakeKinesis,
    KinesisError,
    Normal,
    ResetAfter,
    ResetBefore,
    Slow,
    hash_key_of,
)
from tests.fake_kinesis_sigv4 import MAX_CLOCK_SKEW_S, check_signature
from tests.fakes import Reply

MAX_HASH_KEY = 2**128 - 1
SLOW_S = 0.3  # long enough to measure, short enough for a fast suite
SHORT_READ_TIMEOUT_S = 0.1  # below SLOW_S: the client gives up before the held-back answer comes


class ManualClock:
    """A clock the test moves by hand, for the rate window and the closed-shard window."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    """A 4-shard fake, closed after the test; fails the test if the fake hit a defect of its own."""
    with FakeKinesis(4, seed=3) as server:
        yield server
        assert server.stats().internal_errors == ()


@pytest.fixture
def client(fake: FakeKinesis) -> Any:
    """A boto3 client for the fake, botocore's retries off."""
    return fake.client()


def put(client: Any, fake: FakeKinesis, records: list[tuple[bytes, str]], **extra: Any) -> dict[str, Any]:
    entries = [{"Data": data, "PartitionKey": key} | extra for data, key in records]
    response: dict[str, Any] = client.put_records(StreamName=fake.stream, Records=entries)
    return response


def keyed(n: int, prefix: str = "r") -> list[tuple[bytes, str]]:
    return [(f"{prefix}-{i}".encode(), f"key-{prefix}-{i}") for i in range(n)]


def raw_post(fake: FakeKinesis, operation: str, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A hand-made Kinesis JSON 1.1 request (no SDK, no signature): status, headers and parsed body."""
    connection = http.client.HTTPConnection(fake.url.removeprefix("http://"), timeout=5)
    try:
        connection.request("POST", "/", body, {"X-Amz-Target": f"Kinesis_20131202.{operation}",
                                               "Content-Type": "application/x-amz-json-1.1"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


# --- a tiny KPL aggregate, encoded by hand (the format in /work/shared/reference.md) ---------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # a length-delimited protobuf field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def kpl_aggregate(members: list[tuple[str, bytes]], explicit: dict[int, str] | None = None) -> bytes:
    """Magic + AggregatedRecord(partition_key_table, explicit_hash_key_table, records) + MD5 of the protobuf."""
    explicit = explicit or {}
    keys = list(dict.fromkeys(key for key, _ in members))
    hashes = list(dict.fromkeys(explicit.values()))
    body = b"".join(_field(1, key.encode()) for key in keys) + b"".join(_field(2, h.encode()) for h in hashes)
    for position, (key, data) in enumerate(members):
        record = _varint(1 << 3) + _varint(keys.index(key))
        if position in explicit:
            record += _varint(2 << 3) + _varint(hashes.index(explicit[position]))
        body += _field(3, record + _field(3, data))
    return KPL_MAGIC + body + hashlib.md5(body, usedforsecurity=False).digest()


def keys_in_shard(fake: FakeKinesis, shard_id: str, n: int, prefix: str = "k") -> list[str]:
    """`n` partition keys whose MD5 lands in `shard_id`."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        key = f"{prefix}{i}"
        if fake.shard_of(hash_key_of(key)) == shard_id:
            found.append(key)
        i += 1
    return found


# --- operations -------------------------------------------------------------------------------------------


def test_describe_stream_summary_reports_an_active_stream(fake: FakeKinesis, client: Any) -> None:
    """DescribeStreamSummary through boto3: ACTIVE, the open shard count, the stream mode, the ARN."""
    summary = client.describe_stream_summary(StreamName=fake.stream)["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["OpenShardCount"] == 4
    assert summary["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert client.describe_stream_summary(StreamARN=summary["StreamARN"])["StreamDescriptionSummary"]["StreamName"] == fake.stream


def test_unknown_stream_is_resource_not_found(fake: FakeKinesis, client: Any) -> None:
    """Every operation naming another stream answers 400 ResourceNotFoundException."""
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.put_records(StreamName="other", Records=[{"Data": b"x", "PartitionKey": "k"}])
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.list_shards(StreamName="other")
    assert fake.records() == []


def test_list_shards_pages_cover_the_hash_key_space_evenly(fake: FakeKinesis, client: Any) -> None:
    """ListShards pages by MaxResults and NextToken; the shards' ranges are contiguous, even, over [0, 2^128-1]."""
    first = client.list_shards(StreamName=fake.stream, MaxResults=3)
    second = client.list_shards(NextToken=first["NextToken"], MaxResults=3)
    assert "NextToken" not in second
    shards = first["Shards"] + second["Shards"]
    assert [s["ShardId"] for s in shards] == [f"shardId-{i:012d}" for i in range(4)]
    ranges = [(int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])) for s in shards]
    assert ranges[0][0] == 0 and ranges[-1][1] == MAX_HASH_KEY
    assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(3))
    assert max(end - start for start, end in ranges) - min(end - start for start, end in ranges) <= 1


def test_list_shards_refuses_next_token_with_the_stream_name(fake: FakeKinesis, client: Any) -> None:
    """NextToken must go alone, as on Kinesis: with StreamName it is a 400 InvalidArgumentException."""
    token = client.list_shards(StreamName=fake.stream, MaxResults=1)["NextToken"]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.list_shards(StreamName=fake.stream, NextToken=token)
    assert caught.value.response["Error"]["Code"] == "InvalidArgumentException"
    assert "NextToken and StreamName" in caught.value.response["Error"]["Message"]


def test_put_records_route_by_md5_and_explicit_hash_key(fake: FakeKinesis, client: Any) -> None:
    """Each entry lands in the shard whose range holds MD5(key), or its ExplicitHashKey; sequence numbers rise per shard."""
    shards = {s.shard_id: s for s in fake.shards()}
    records = keyed(300)
    response = put(client, fake, records)
    assert response["FailedRecordCount"] == 0
    for (_, key), answer in zip(records, response["Records"], strict=True):
        assert shards[answer["ShardId"]].holds(int.from_bytes(hashlib.md5(key.encode(), usedforsecurity=False).digest(), "big"))
    last_shard = fake.shards()[-1]
    pinned = put(client, fake, [(b"pinned", "key-r-0")], ExplicitHashKey=str(last_shard.start))
    assert pinned["Records"][0]["ShardId"] == last_shard.shard_id
    stored = fake.records()
    assert [(r.data, r.partition_key) for r in stored[:300]] == records
    assert stored[-1].explicit_hash_key == str(last_shard.start)
    for shard_id in shards:
        numbers = [int(r.sequence_number) for r in stored if r.shard_id == shard_id]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers) and numbers
    assert [r.sequence_number for r in stored[:300]] == [a["SequenceNumber"] for a in response["Records"]]


def test_put_record_stores_one_record(fake: FakeKinesis, client: Any) -> None:
    """PutRecord answers the shard and sequence number of the record it stored."""
    answer = client.put_record(StreamName=fake.stream, Data=b"one", PartitionKey="solo")
    assert answer["ShardId"] == fake.shard_of(hash_key_of("solo"))
    assert [(r.data, r.sequence_number) for r in fake.records()] == [(b"one", answer["SequenceNumber"])]


@pytest.mark.parametrize(
    ("entry", "where", "code"),
    [
        ({"Data": b"x", "PartitionKey": ""}, "records.3.member.partitionKey", "ValidationException"),
        ({"Data": b"x", "PartitionKey": "k" * 257}, "records.3.member.partitionKey", "ValidationException"),
        ({"Data": b"x" * 1025, "PartitionKey": "k"}, "records.3.member.data", "ValidationException"),
        ({"Data": b"x" * 1020, "PartitionKey": "12345"}, "records.3.member.data", "ValidationException"),
        ({"Data": b"x", "PartitionKey": "k", "ExplicitHashKey": "12a"}, "records.3.member.explicitHashKey",
         "ValidationException"),
        ({"Data": b"x", "PartitionKey": "k", "ExplicitHashKey": str(2**128)}, "records.3.member.explicitHashKey",
         "InvalidArgumentException"),
    ],
)
def test_validation_names_the_first_bad_entry(entry: dict[str, Any], where: str, code: str) -> None:
    """A bad entry fails the whole call with a 400 naming it (1-based, like AWS); nothing of the call is stored."""
    with FakeKinesis(2, max_record_bytes=1024) as fake:
        client = fake.client(parameter_validation=False)
        good = {"Data": b"fine", "PartitionKey": "ok"}
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            client.put_records(StreamName=fake.stream, Records=[good, good, entry, entry])
        assert caught.value.response["Error"]["Code"] == code
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert where in caught.value.response["Error"]["Message"]
        assert "records.4" not in caught.value.response["Error"]["Message"]
        assert fake.records() == []


def test_more_than_500_records_is_a_validation_error(fake: FakeKinesis) -> None:
    """501 entries in one call: 400 ValidationException at 'records'."""
    client = fake.client(parameter_validation=False)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        put(client, fake, keyed(501))
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "at 'records'" in caught.value.response["Error"]["Message"]


def test_a_hand_made_client_gets_kinesis_json_answers(fake: FakeKinesis) -> None:
    """Without an SDK: JSON 1.1 content type, error bodies with __type, unknown operations and bad JSON refused."""
    body = json.dumps({"StreamName": fake.stream, "Records": [{"Data": base64.b64encode(b"raw").decode(), "PartitionKey": "p"}]})
    status, headers, answer = raw_post(fake, "PutRecords", body.encode())
    assert status == 200 and headers["Content-Type"] == "application/x-amz-json-1.1"
    assert answer["FailedRecordCount"] == 0 and answer["Records"][0]["ShardId"] == fake.shard_of(hash_key_of("p"))
    assert raw_post(fake, "CreateStream", b"{}")[0:3:2] == (400, {"__type": "UnknownOperationException",
                                                                   "message": "Unknown operation 'CreateStream'"})
    status, _, answer = raw_post(fake, "PutRecords", b"{not json")
    assert (status, answer["__type"]) == (400, "SerializationException")
    assert [r.data for r in fake.records()] == [b"raw"]


# --- faults -----------------------------------------------------------------------------------------------


def test_entry_failures_come_in_a_partial_200_answer(fake: FakeKinesis, client: Any) -> None:
    """At a 30 % entry failure rate about 30 % are refused with the code, counted; exactly the others are stored."""
    fake.set_faults(entry_failure_rate=0.3, entry_failure_code=INTERNAL_FAILURE)
    records = keyed(1000)
    answers = [a for batch in range(2) for a in put(client, fake, records[batch * 500:(batch + 1) * 500])["Records"]]
    refused = [data for (data, _), a in zip(records, answers, strict=True) if "ErrorCode" in a]
    assert {a["ErrorCode"] for a in answers if "ErrorCode" in a} == {INTERNAL_FAILURE}
    assert 200 <= len(refused) <= 400
    assert Counter(r.data for r in fake.records()) == Counter(data for data, _ in records) - Counter(refused)
    stats = fake.stats()
    assert stats.injected["entry_failure"] == stats.refused_entries[INTERNAL_FAILURE] == len(refused)


def test_the_same_seed_injects_the_same_failures() -> None:
    """Faults are seeded: two fakes with one seed refuse the same positions of the same calls."""
    refused: list[list[int]] = []
    for _ in range(2):
        with FakeKinesis(2, seed=11) as fake:
            fake.set_faults(entry_failure_rate=0.5)
            answer = put(fake.client(), fake, keyed(100))
            refused.append([i for i, a in enumerate(answer["Records"]) if "ErrorCode" in a])
    assert refused[0] == refused[1] and 0 < len(refused[0]) < 100


@pytest.mark.parametrize(("status", "code"), [(500, INTERNAL_FAILURE), (503, "ServiceUnavailable"), (400, THROTTLED)])
def test_whole_call_failures_answer_the_status_and_code(fake: FakeKinesis, client: Any, status: int, code: str) -> None:
    """A whole-call fault answers its HTTP status and __type; nothing of the call is stored."""
    fake.set_faults(call_failure_rate=1.0, call_failure_status=status, call_failure_code=code)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        put(client, fake, keyed(3))
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert fake.records() == [] and fake.stats().injected["call_failure"] == 1


def test_slow_answers_are_held_back_after_storing(fake: FakeKinesis, client: Any) -> None:
    """A slow answer comes after the delay; a client timing out first has lost it although the records are stored."""
    fake.set_faults(slow_rate=1.0, slow_delay_s=SLOW_S)
    started = time.monotonic()
    assert put(client, fake, keyed(2, "a"))["FailedRecordCount"] == 0
    assert time.monotonic() - started >= SLOW_S
    impatient = fake.client(read_timeout=SHORT_READ_TIMEOUT_S)
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        put(impatient, fake, keyed(2, "b"))
    assert [r.data for r in fake.records()] == [b"a-0", b"a-1", b"b-0", b"b-1"]
    assert fake.stats().injected["slow"] == 2


def test_reset_before_processing_stores_nothing(fake: FakeKinesis, client: Any) -> None:
    """A reset before processing: the client's connection is reset with no answer, and nothing is stored."""
    fake.set_faults(reset_before_rate=1.0)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        put(client, fake, keyed(5))
    assert fake.records() == [] and fake.stats().injected["reset_before"] == 1


def test_reset_after_storing_loses_the_answer_and_a_resend_duplicates(fake: FakeKinesis, client: Any) -> None:
    """The lost answer: the records are stored, the connection reset; sending again stores them twice."""
    fake.set_faults(reset_after_rate=1.0)
    records = keyed(5)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        put(client, fake, records)
    assert [r.data for r in fake.records()] == [data for data, _ in records]
    fake.set_faults(reset_after_rate=0.0)
    put(client, fake, records)
    assert fake.data_counts() == Counter({data: 2 for data, _ in records})


def test_scripted_steps_apply_to_the_next_calls_in_order(fake: FakeKinesis, client: Any) -> None:
    """Scripted steps override random faults call by call, then plain processing resumes."""
    fake.set_faults(entry_failure_rate=1.0)  # overridden by every step, then back once the script is done
    fake.script(EntryErrors({1: THROTTLED}), CallError(500, INTERNAL_FAILURE), ResetBefore(), ResetAfter(),
                Slow(0.05, then=EntryErrors({0: INTERNAL_FAILURE})), Normal(),
                lambda body: Reply.error("ExpiredTokenException", 400, f"{len(body['Records'])} records"))
    assert [("ErrorCode" in a) for a in put(client, fake, keyed(3, "s1"))["Records"]] == [False, True, False]
    with pytest.raises(botocore.exceptions.ClientError, match="InternalFailure"):
        put(client, fake, keyed(1, "s2"))
    for _ in range(2):
        with pytest.raises(botocore.exceptions.ConnectionClosedError):
            put(client, fake, keyed(1, "s3"))
    assert [a.get("ErrorCode") for a in put(client, fake, keyed(2, "s5"))["Records"]] == [INTERNAL_FAILURE, None]
    assert put(client, fake, keyed(2, "s6"))["FailedRecordCount"] == 0
    with pytest.raises(botocore.exceptions.ClientError, match="2 records"):
        put(client, fake, keyed(2, "s7"))
    assert fake.pending_steps() == 0
    assert put(client, fake, keyed(2, "s8"))["FailedRecordCount"] == 2
    assert [r.data for r in fake.records()] == [b"s1-0", b"s1-2", b"s3-0", b"s5-1", b"s6-0", b"s6-1"]


def test_scripted_steps_for_read_operations(fake: FakeKinesis, client: Any) -> None:
    """ListShards and DescribeStreamSummary take scripted errors and resets too."""
    fake.script(CallError(400, "LimitExceededException"), ResetBefore(), operation="ListShards")
    with pytest.raises(client.exceptions.LimitExceededException):
        client.list_shards(StreamName=fake.stream)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        client.list_shards(StreamName=fake.stream)
    assert len(client.list_shards(StreamName=fake.stream)["Shards"]) == 4


def test_rate_limit_refuses_beyond_the_limit_over_a_rolling_second() -> None:
    """Per shard: entries beyond records/s within the last second are throttled, counted; the window rolls; others unaffected."""
    clock = ManualClock()
    with FakeKinesis(2, clock=clock) as fake:
        client = fake.client()
        fake.limit_shards(records_per_s=10)
        first, second = (s.shard_id for s in fake.shards())
        hot = [(f"h{i}".encode(), key) for i, key in enumerate(keys_in_shard(fake, first, 25))]
        cold = [(f"c{i}".encode(), key) for i, key in enumerate(keys_in_shard(fake, second, 5))]
        answer = put(client, fake, hot[:15] + cold)
        codes = [a.get("ErrorCode") for a in answer["Records"]]
        assert codes == [None] * 10 + [THROTTLED] * 5 + [None] * 5
        clock.now += 0.5  # still inside the second: the shard stays full
        assert put(client, fake, hot[15:18])["FailedRecordCount"] == 3
        clock.now += 0.51  # the first ten left the window
        assert put(client, fake, hot[15:25])["FailedRecordCount"] == 0
        assert fake.stats().throttled == Counter({first: 8})
        assert Counter(r.shard_id for r in fake.records()) == Counter({first: 20, second: 5})


def test_rate_limit_on_bytes_counts_data_and_key() -> None:
    """bytes/s counts data + partition key: 30-byte entries under a 100-byte limit, three pass a second."""
    clock = ManualClock()
    with FakeKinesis(1, clock=clock) as fake:
        fake.limit_shards(bytes_per_s=100)
        answer = put(fake.client(), fake, [(b"d" * 25, f"key{i}a") for i in range(5)])
        assert [a.get("ErrorCode") for a in answer["Records"]] == [None, None, None, THROTTLED, THROTTLED]


def test_concurrent_clients_each_accepted_entry_is_stored_once(fake: FakeKinesis) -> None:
    """Four threads putting at once under faults: every entry answered as accepted is stored exactly once."""
    fake.set_faults(entry_failure_rate=0.2, call_failure_rate=0.1)
    accepted: list[bytes] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        client = fake.client()
        for batch in range(10):
            records = keyed(50, f"{name}-{batch}")
            try:
                answers = put(client, fake, records)["Records"]
            except botocore.exceptions.ClientError:
                continue
            with lock:
                accepted.extend(data for (data, _), a in zip(records, answers, strict=True) if "ErrorCode" not in a)

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert fake.data_counts() == Counter(accepted) and len(accepted) > 0
    assert sorted(r.arrival for r in fake.records()) == list(range(len(accepted)))
    assert fake.stats().calls["PutRecords"] == 40


# --- resharding ---------------------------------------------------------------------------------------------


def test_split_closes_the_parent_and_routes_to_the_children(fake: FakeKinesis, client: Any) -> None:
    """split: the parent gets an EndingSequenceNumber, two children its halves and ParentShardId; writes follow."""
    parent = fake.shards()[0]
    put(client, fake, [(b"before", keys_in_shard(fake, parent.shard_id, 1)[0])])
    low_id, high_id = fake.split(parent.shard_id)
    listed = {s["ShardId"]: s for s in client.list_shards(StreamName=fake.stream)["Shards"]}
    assert "EndingSequenceNumber" in listed[parent.shard_id]["SequenceNumberRange"]
    low, high = listed[low_id], listed[high_id]
    assert low["ParentShardId"] == high["ParentShardId"] == parent.shard_id
    assert int(low["HashKeyRange"]["StartingHashKey"]) == parent.start
    assert int(low["HashKeyRange"]["EndingHashKey"]) + 1 == int(high["HashKeyRange"]["StartingHashKey"])
    assert int(high["HashKeyRange"]["EndingHashKey"]) == parent.end
    latest = [s["ShardId"] for s in client.list_shards(StreamName=fake.stream, ShardFilter={"Type": "AT_LATEST"})["Shards"]]
    assert parent.shard_id not in latest and {low_id, high_id} <= set(latest)
    assert client.describe_stream_summary(StreamName=fake.stream)["StreamDescriptionSummary"]["OpenShardCount"] == 5
    answer = put(client, fake, [(b"low", "x"), (b"high", "y")], ExplicitHashKey=str(parent.start))
    assert {a["ShardId"] for a in answer["Records"]} == {low_id}
    assert put(client, fake, [(b"top", "z")], ExplicitHashKey=str(parent.end))["Records"][0]["ShardId"] == high_id
    assert fake.records(parent.shard_id)[0].data == b"before" and len(fake.records(parent.shard_id)) == 1


def test_merge_joins_adjacent_shards(fake: FakeKinesis, client: Any) -> None:
    """merge: one child over both ranges with ParentShardId and AdjacentParentShardId; non-adjacent shards refused."""
    shards = fake.shards()
    with pytest.raises(ValueError, match="adjacent"):
        fake.merge(shards[0].shard_id, shards[2].shard_id)
    child_id = fake.merge(shards[2].shard_id, shards[1].shard_id)
    child = next(s for s in client.list_shards(StreamName=fake.stream)["Shards"] if s["ShardId"] == child_id)
    assert (child["ParentShardId"], child["AdjacentParentShardId"]) == (shards[2].shard_id, shards[1].shard_id)
    assert (int(child["HashKeyRange"]["StartingHashKey"]), int(child["HashKeyRange"]["EndingHashKey"])) == (
        shards[1].start, shards[2].end)
    assert fake.shard_of(shards[1].start) == fake.shard_of(shards[2].end) == child_id
    with pytest.raises(ValueError, match="not an open shard"):
        fake.split(shards[1].shard_id)


def test_closed_shard_range_answers_resource_not_found_for_a_while() -> None:
    """reject_closed_for_s: writes into a just-closed shard's range get ResourceNotFoundException, then pass."""
    clock = ManualClock()
    with FakeKinesis(2, clock=clock, reject_closed_for_s=2.0) as fake:
        client = fake.client()
        closed, other = fake.shards()
        fake.split(closed.shard_id)
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            put(client, fake, [(b"early", "k")], ExplicitHashKey=str(closed.start))
        assert put(client, fake, [(b"elsewhere", "k")], ExplicitHashKey=str(other.start))["FailedRecordCount"] == 0
        clock.now += 2.0
        assert put(client, fake, [(b"later", "k")], ExplicitHashKey=str(closed.start))["FailedRecordCount"] == 0
        assert [r.data for r in fake.records()] == [b"elsewhere", b"later"]
        assert fake.stats().injected["closed_shard"] == 1


# --- aggregation ----------------------------------------------------------------------------------------------


def test_user_records_open_a_hand_built_aggregate(fake: FakeKinesis, client: Any) -> None:
    """An aggregate of one shard's records comes back as its members (deaggregated), plain records as they are."""
    shard = fake.shards()[1]
    keys = keys_in_shard(fake, shard.shard_id, 3)
    members = [(keys[0], b"m0"), (keys[1], b"m1"), (keys[0], b"m2"), (keys[2], "ünï".encode())]
    aggregate = kpl_aggregate(members)
    put(client, fake, [(aggregate, keys[0])], ExplicitHashKey=str(hash_key_of(keys[0])))
    put(client, fake, [(b"plain", "p")])
    users = fake.user_records()
    assert [(u.partition_key, u.data, u.sub_index) for u in users[:4]] == [
        (key, data, i) for i, (key, data) in enumerate(members)]
    assert {u.shard_id for u in users[:4]} == {shard.shard_id}
    assert (users[4].data, users[4].sub_index, users[4].shard_id) == (b"plain", None, fake.shard_of(hash_key_of("p")))
    assert len(fake.records()) == 2
    assert fake.data_counts() == Counter([b"m0", b"m1", b"m2", "ünï".encode(), b"plain"])
    assert fake.misrouted_user_records() == []


def test_misrouted_user_records_are_the_members_outside_their_shard(fake: FakeKinesis, client: Any) -> None:
    """An aggregate mixing shards: the members whose hash is outside the shard it landed in are reported."""
    first, second = fake.shards()[:2]
    home = keys_in_shard(fake, first.shard_id, 2)
    away = keys_in_shard(fake, second.shard_id, 1)
    aggregate = kpl_aggregate([(home[0], b"h0"), (away[0], b"a0"), (home[1], b"h1")])
    put(client, fake, [(aggregate, home[0])])
    assert [(u.data, u.shard_id) for u in fake.misrouted_user_records()] == [(b"a0", first.shard_id)]


def test_member_explicit_hash_keys_decide_their_route(fake: FakeKinesis, client: Any) -> None:
    """A member with an explicit hash key is judged by it, a member without one by MD5 of its key."""
    first, second = fake.shards()[:2]
    home = keys_in_shard(fake, first.shard_id, 2)
    members = [(home[0], b"by-md5"), (home[1], b"pinned-away"), (home[0], b"pinned-home")]
    aggregate = kpl_aggregate(members, explicit={1: str(second.start), 2: str(first.start)})
    put(client, fake, [(aggregate, home[0])])
    assert [u.data for u in fake.misrouted_user_records()] == [b"pinned-away"]
    assert [u.hash_key for u in fake.user_records()] == [hash_key_of(home[0]), second.start, first.start]


def test_a_corrupt_aggregate_stays_one_record(fake: FakeKinesis, client: Any) -> None:
    """Magic bytes with a wrong MD5 trailer: the deaggregator keeps the record whole, so counts show the damage."""
    broken = kpl_aggregate([("k", b"m0"), ("k", b"m1")])[:-1] + b"\x00"
    put(client, fake, [(broken, "k")])
    assert [(u.data, u.sub_index) for u in fake.user_records()] == [(broken, None)]


# --- counters and reset -------------------------------------------------------------------------------------


def test_counters_count_calls_entries_and_connections(fake: FakeKinesis, client: Any) -> None:
    """Calls per operation, entries per PutRecords call, one keep-alive connection for one client."""
    client.list_shards(StreamName=fake.stream)
    put(client, fake, keyed(3))
    put(client, fake, keyed(7))
    stats = fake.stats()
    assert stats.calls == Counter({"ListShards": 1, "PutRecords": 2})
    assert stats.entries_per_call == (3, 7)
    assert stats.connections == 1
    assert sum(stats.accepted.values()) == 10


def test_reset_restores_the_state_after_construction(fake: FakeKinesis, client: Any) -> None:
    """reset: records, counters, faults, limits, scripts gone; the initial shards back."""
    fake.split(fake.shards()[0].shard_id)
    put(client, fake, keyed(2))
    fake.set_faults(entry_failure_rate=1.0)
    fake.script(CallError())
    fake.limit_shards(records_per_s=1)
    fake.reset()
    assert [s.shard_id for s in fake.shards()] == [f"shardId-{i:012d}" for i in range(4)]
    assert fake.records() == [] and fake.pending_steps() == 0
    assert put(client, fake, keyed(20))["FailedRecordCount"] == 0
    assert fake.stats().calls == Counter({"PutRecords": 1})


# --- the request parser, on any input ------------------------------------------------------------------------

_TEXT = st.text(max_size=300)
_B64 = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
_VALID = st.fixed_dictionaries(
    {"Data": _B64, "PartitionKey": st.text(min_size=1, max_size=40)},
    optional={"ExplicitHashKey": st.integers(min_value=0, max_value=MAX_HASH_KEY).map(str)},
)
# Any JSON value, of the kinds a field could wrongly hold.
_ODD = st.one_of(_TEXT, st.text(min_size=120, max_size=260), st.integers(min_value=-(2**130), max_value=2**130).map(str),
                 st.integers(), st.booleans(), st.none(), st.lists(st.integers(), max_size=2), st.just(""))
# A valid entry with one field replaced by an odd value or dropped: every check of the parser meets bad input.
_ONE_BAD = st.builds(
    lambda entry, name, value, drop: {k: v for k, v in (entry | {name: value}).items() if not (drop and k == name)},
    _VALID, st.sampled_from(["Data", "PartitionKey", "ExplicitHashKey"]), _ODD, st.booleans(),
)
_ENTRY = st.one_of(_VALID, _ONE_BAD, st.dictionaries(_TEXT, _ODD, max_size=3), _ODD)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.one_of(
    st.lists(_VALID, min_size=1, max_size=6),
    st.tuples(st.lists(_VALID, max_size=2), _ONE_BAD, st.lists(_ENTRY, max_size=2)).map(lambda t: [*t[0], t[1], *t[2]]),
    st.lists(_ENTRY, max_size=6)),
       extra=st.one_of(st.just({}), st.dictionaries(st.sampled_from(["Records", "StreamARN", "x"]), _TEXT)))
def test_any_put_records_body_is_answered_not_crashed(fake: FakeKinesis, records: list[Any], extra: dict[str, Any]) -> None:
    """Whatever the body, PutRecords answers 200 (every entry stored as sent) or a 400 storing nothing; never a defect."""
    body = {"StreamName": fake.stream, "Records": records} | {k: v for k, v in extra.items() if k != "Records"}
    before = len(fake.records())
    answer = fake._handle("Kinesis_20131202.PutRecords", json.dumps(body).encode())
    stored = fake.records()[before:]
    event(f"status {answer.status}")
    assert fake.stats().internal_errors == ()
    if answer.status == 200:
        assert answer.payload is not None and answer.payload["FailedRecordCount"] == 0
        assert [(r.data, r.partition_key) for r in stored] == [(base64.b64decode(e["Data"]), e["PartitionKey"]) for e in records]
        assert all(0 < len(r.partition_key) <= 256 and r.hash_key <= MAX_HASH_KEY for r in stored)
    else:
        assert answer.status == 400 and stored == []
        assert answer.payload is not None and answer.payload["__type"] in {
            "ValidationException", "SerializationException", "InvalidArgumentException", "ResourceNotFoundException"}


@pytest.mark.parametrize("name", ["Data", "PartitionKey", "ExplicitHashKey"])
@pytest.mark.parametrize("value", [7, True, None, [], {}, "", "é" * 257])
def test_a_field_of_the_wrong_kind_is_a_400(fake: FakeKinesis, name: str, value: Any) -> None:
    """Each field holding a value of the wrong JSON kind: a 400 naming the entry (or the body), never a defect."""
    entry = {"Data": base64.b64encode(b"ok").decode(), "PartitionKey": "k"} | {name: value}
    answer = fake._handle("Kinesis_20131202.PutRecords", json.dumps({"StreamName": fake.stream, "Records": [entry]}).encode())
    if (name, value) in [("ExplicitHashKey", None), ("Data", "")]:  # an absent optional field; an empty blob
        assert answer.status == 200
        return
    assert answer.status == 400 and answer.payload is not None, answer
    assert fake.records() == []


# --- signatures ---------------------------------------------------------------------------------------------

KEY_ID, SECRET = "AKIDFAKEKINESIS", "not-a-real-secret"


def signed_request(fake: FakeKinesis, body: bytes, secret: str = SECRET) -> tuple[dict[str, str], bytes]:
    """A PutRecords request signed by botocore's SigV4 signer, as the wire client signs: headers and body."""
    request = AWSRequest(method="POST", url=fake.url + "/", data=body,
                         headers={"X-Amz-Target": "Kinesis_20131202.PutRecords", "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(KEY_ID, secret), "kinesis", "us-east-1").add_auth(request)
    return dict(request.headers.items()), body


def test_signatures_are_checked_when_credentials_are_given() -> None:
    """With credentials: boto3 with the right keys passes; a wrong secret, an unknown key or no signature are 400s."""
    with FakeKinesis(1, credentials={KEY_ID: SECRET}) as fake:
        assert put(fake.client(), fake, keyed(2))["FailedRecordCount"] == 0
        refusals = [(KEY_ID, "wrong", "InvalidSignatureException"), ("AKIDOTHER", SECRET, "UnrecognizedClientException")]
        for key, secret, code in refusals:
            client = boto3.client("kinesis", endpoint_url=fake.url, region_name="us-east-1", aws_access_key_id=key,
                                  aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}))
            with pytest.raises(botocore.exceptions.ClientError) as caught:
                put(client, fake, keyed(1, "x"))
            assert caught.value.response["Error"]["Code"] == code
        body = json.dumps({"StreamName": fake.stream, "Records": [{"Data": "eA==", "PartitionKey": "k"}]}).encode()
        assert raw_post(fake, "PutRecords", body)[2]["__type"] == "MissingAuthenticationTokenException"
        assert [r.data for r in fake.records()] == [b"r-0", b"r-1"]
        assert fake.stats().refused_signatures == 3


def test_a_body_changed_after_signing_is_refused() -> None:
    """A request signed by botocore's SigV4 passes as sent, and is refused once its body differs from what was signed."""
    with FakeKinesis(1, credentials={KEY_ID: SECRET}) as fake:
        body = json.dumps({"StreamName": fake.stream, "Records": [{"Data": "eA==", "PartitionKey": "k"}]}).encode()
        headers, _ = signed_request(fake, body)
        connection = http.client.HTTPConnection(fake.url.removeprefix("http://"), timeout=5)
        try:
            for sent, status in [(body, 200), (body.replace(b'"k"', b'"j"'), 400)]:
                connection.request("POST", "/", sent, headers)
                response = connection.getresponse()
                answer = json.loads(response.read())
                assert response.status == status, answer
        finally:
            connection.close()
        assert answer["__type"] == "InvalidSignatureException"
        assert [r.partition_key for r in fake.records()] == ["k"]


def test_an_old_signature_has_expired() -> None:
    """A signature older than the allowed clock skew is refused as expired."""
    with FakeKinesis(1) as fake:
        headers, body = signed_request(fake, b"{}")
    # http.client sends Host from the URL; botocore signs it from there without adding the header.
    lowered = {name.lower(): value for name, value in headers.items()} | {"host": fake.url.removeprefix("http://")}
    signed_at = datetime.strptime(lowered["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    check_signature({KEY_ID: SECRET}, "us-east-1", method="POST", target_path="/", headers=lowered, body=body, now=signed_at + 60)
    with pytest.raises(KinesisError, match="expired"):
        check_signature({KEY_ID: SECRET}, "us-east-1", method="POST", target_path="/", headers=lowered, body=body,
                        now=signed_at + MAX_CLOCK_SKEW_S + 1)


def test_wait_for_user_records_wakes_when_records_land(fake: FakeKinesis, client: Any) -> None:
    """A waiter returns once the records are stored (long before its timeout); an unmet wait returns False."""
    outcome: list[tuple[bool, float]] = []
    waiting = threading.Thread(target=lambda: outcome.append((fake.wait_for_user_records(3, timeout_s=20), time.monotonic())))
    waiting.start()
    put(client, fake, keyed(3))
    stored_at = time.monotonic()
    waiting.join(timeout=20)
    assert outcome and outcome[0][0] and outcome[0][1] - stored_at < 5
    assert not fake.wait_for_user_records(4, timeout_s=0.1)
    assert fake.wait_until(lambda f: f.stats().calls["PutRecords"] == 1, timeout_s=0)
