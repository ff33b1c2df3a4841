"""FakeKinesis self-tests: each operation through boto3 and a hand-made client, validation, the parser on any input,
counters, reset and waiting; the helpers (put, keyed, raw_post, four_shard_fake) the other self-test files share."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.fake_kinesis import (
    CallError,
    FakeKinesis,
    hash_key_of,
)

MAX_HASH_KEY = 2**128 - 1


def four_shard_fake() -> Iterator[FakeKinesis]:
    """A 4-shard fake, closed after the test; fails the test if the fake hit a defect of its own."""
    with FakeKinesis(4, seed=3) as server:
        yield server
        assert server.stats().internal_errors == ()


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    """A 4-shard fake, closed after the test; fails the test if the fake hit a defect of its own."""
    yield from four_shard_fake()


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


# --- operations -------------------------------------------------------------------------------------------


def test_describe_stream_summary_reports_an_active_stream(fake: FakeKinesis, client: Any) -> None:
    """DescribeStreamSummary through boto3: ACTIVE (or what the test sets), the open shard count, the mode, the ARN."""
    summary = client.describe_stream_summary(StreamName=fake.stream)["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["OpenShardCount"] == 4
    assert summary["StreamModeDetails"] == {"StreamMode": "PROVISIONED"}
    assert client.describe_stream_summary(StreamARN=summary["StreamARN"])["StreamDescriptionSummary"]["StreamName"] == fake.stream
    fake.stream_status = "UPDATING"
    assert client.describe_stream_summary(StreamName=fake.stream)["StreamDescriptionSummary"]["StreamStatus"] == "UPDATING"


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


def test_close_drops_open_connections_and_refuses_new_ones() -> None:
    """After close, a kept-alive connection is not answered any more and connecting is refused."""
    fake = FakeKinesis(1)
    body = json.dumps({"StreamName": fake.stream}).encode()
    headers = {"X-Amz-Target": "Kinesis_20131202.DescribeStreamSummary"}
    connection = http.client.HTTPConnection(fake.url.removeprefix("http://"), timeout=5)
    try:
        connection.request("POST", "/", body, headers)
        assert connection.getresponse().read()
        fake.close()
        with pytest.raises(OSError):
            connection.request("POST", "/", body, headers)
            connection.getresponse().read()
    finally:
        connection.close()
    with pytest.raises(ConnectionRefusedError):
        raw_post(fake, "DescribeStreamSummary", body)
    assert fake.stats().calls["DescribeStreamSummary"] == 1
