"""FakeKinesis self-tests: random and scripted faults, per-shard rate limits, concurrent clients, resharding."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import botocore.exceptions
import pytest

from tests.fake_kinesis import (
    INTERNAL_FAILURE,
    THROTTLED,
    CallError,
    EntryErrors,
    FakeKinesis,
    ManualClock,
    Normal,
    ResetAfter,
    ResetBefore,
    ResetOnArrival,
    Slow,
)
from tests.fakes import Reply
from tests.test_fake_kinesis import four_shard_fake, keyed, put, raw_post

SLOW_S = 0.3  # long enough to measure, short enough for a fast suite
SHORT_READ_TIMEOUT_S = 0.1  # below SLOW_S: the client gives up before the held-back answer comes
# Far more than loopback socket buffers hold (a few MiB), so a send of it cannot complete unread.
UNBUFFERABLE_BODY_BYTES = 32 * 1024 * 1024


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    """A 4-shard fake, closed after the test; fails the test if the fake hit a defect of its own."""
    yield from four_shard_fake()


@pytest.fixture
def client(fake: FakeKinesis) -> Any:
    """A boto3 client for the fake, botocore's retries off."""
    return fake.client()


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
        hot = [(f"h{i}".encode(), key) for i, key in enumerate(fake.keys_in_shard(first, 25))]
        cold = [(f"c{i}".encode(), key) for i, key in enumerate(fake.keys_in_shard(second, 5))]
        answer = put(client, fake, hot[:15] + cold)
        codes = [a.get("ErrorCode") for a in answer["Records"]]
        assert codes == [None] * 10 + [THROTTLED] * 5 + [None] * 5
        clock.now += 0.5  # still inside the second: the shard stays full
        assert put(client, fake, hot[15:18])["FailedRecordCount"] == 3
        clock.now += 0.51  # the first ten left the window
        assert put(client, fake, hot[15:25])["FailedRecordCount"] == 0
        assert fake.stats().throttled == Counter({first: 8})
        assert Counter(r.shard_id for r in fake.records()) == Counter({first: 20, second: 5})
        assert Counter(r.stored_at for r in fake.records()) == Counter({1000.0: 15, 1001.01: 10})


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
    put(client, fake, [(b"before", fake.keys_in_shard(parent.shard_id, 1)[0])])
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


def test_a_reset_on_arrival_fails_a_large_send(fake: FakeKinesis) -> None:
    """ResetOnArrival: with the body unread, a send larger than the socket buffers fails; nothing stored; next call fine."""
    fake.script(ResetOnArrival())
    oversize = b'{"StreamName": "%s", "Records": [{"Data": "%s", "PartitionKey": "big"}]}' % (
        fake.stream.encode(), b"eHh4" * (UNBUFFERABLE_BODY_BYTES // 4))
    connection = http.client.HTTPConnection(fake.url.removeprefix("http://"), timeout=5)
    try:
        with pytest.raises((BrokenPipeError, ConnectionResetError)):  # from the send itself, before any answer
            connection.request("POST", "/", oversize, {"X-Amz-Target": "Kinesis_20131202.PutRecords"})
    finally:
        connection.close()
    assert fake.records() == [] and fake.stats().injected["reset_on_arrival"] == 1 and fake.pending_steps() == 0
    body = json.dumps({"StreamName": fake.stream, "Records": [{"Data": base64.b64encode(b"x").decode(), "PartitionKey": "k"}]})
    assert len(raw_post(fake, "PutRecords", body.encode())[2]["Records"]) == 1
