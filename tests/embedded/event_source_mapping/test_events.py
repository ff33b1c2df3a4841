"""The payloads the runner exchanges with the function have exactly the shapes AWS documents for Lambda + Kinesis."""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from embedded.event_source_mapping.events import (
    CONDITION_RECORD_AGE_EXCEEDED,
    CONDITION_RETRIES_EXHAUSTED,
    EventSource,
    LambdaContext,
    StreamRecord,
)

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/events-test"
ROLE_ARN = "arn:aws:iam::123456789012:role/events-test-role"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:events-test"
SHARD = "shardId-000000000003"
# 2026-01-01T00:00:00.250Z and one second later.
ARRIVAL = 1_767_225_600.25
ISO_MILLIS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

RecordFactory = Callable[..., StreamRecord]


@pytest.fixture
def record() -> RecordFactory:
    """Builds StreamRecords with distinct sequence numbers one second apart unless told otherwise."""
    counter = iter(range(1, 1_000))

    def make(data: bytes = b"{}", key: str = "user-1", seq: str | None = None, arrival: float | None = None) -> StreamRecord:
        n = next(counter)
        return StreamRecord(
            seq or f"4960000000000000000000000000000000000000000000000{n:04d}", key, data, arrival or ARRIVAL + n - 1
        )

    return make


@pytest.fixture
def source() -> EventSource:
    return EventSource(stream_arn=STREAM_ARN, region="us-east-1", invoke_identity_arn=ROLE_ARN)


def test_get_records_entry_becomes_a_record_with_epoch_arrival() -> None:
    """GetRecords' datetime arrival becomes epoch seconds as a float; data stays raw bytes."""
    raw: dict[str, Any] = {
        "SequenceNumber": "49600000000000000000000000000000000000000000000000001",
        "PartitionKey": "ユーザー",
        "Data": b"\xff\x00binary",
        "ApproximateArrivalTimestamp": datetime(2026, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC),
    }
    record = StreamRecord.from_get_records(raw)
    assert record == StreamRecord(raw["SequenceNumber"], "ユーザー", b"\xff\x00binary", ARRIVAL)
    assert isinstance(record.arrival, float)


def test_get_records_entry_with_numeric_arrival() -> None:
    """An arrival already in epoch seconds (as some endpoints send it) is kept as a float."""
    raw = {"SequenceNumber": "1", "PartitionKey": "k", "Data": b"", "ApproximateArrivalTimestamp": 1_767_225_600}
    assert StreamRecord.from_get_records(raw).arrival == 1_767_225_600.0


def test_event_has_every_field_lambda_sends(source: EventSource, record: RecordFactory) -> None:
    """Each event record has exactly Lambda's keys and values: base64 data, eventID shard:seq, ARNs, region."""
    first = record(data="héllo wörld 🐦".encode())
    event = source.event(SHARD, [first])
    assert event == {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "user-1",
                    "sequenceNumber": first.sequence_number,
                    "data": base64.b64encode("héllo wörld 🐦".encode()).decode("ascii"),
                    "approximateArrivalTimestamp": ARRIVAL,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{SHARD}:{first.sequence_number}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": ROLE_ARN,
                "awsRegion": "us-east-1",
                "eventSourceARN": STREAM_ARN,
            }
        ]
    }


def test_event_keeps_batch_order_and_round_trips_binary_data(source: EventSource, record: RecordFactory) -> None:
    """Records appear in the batch's order; base64 data decodes to the exact bytes put, binary included."""
    payloads = [bytes(range(256)), b"", b"\x00", json.dumps({"text": "日本語"}).encode()]
    batch = [record(data=p, key=f"k{i}") for i, p in enumerate(payloads)]
    records = source.event(SHARD, batch)["Records"]
    assert [r["kinesis"]["sequenceNumber"] for r in records] == [r.sequence_number for r in batch]
    assert [base64.b64decode(r["kinesis"]["data"]) for r in records] == payloads
    assert json.loads(json.dumps(source.event(SHARD, batch))) == source.event(SHARD, batch)  # JSON-serializable


@pytest.mark.parametrize("condition", [CONDITION_RETRIES_EXHAUSTED, CONDITION_RECORD_AGE_EXCEEDED])
def test_on_failure_record_is_shaped_like_lambdas(source: EventSource, record: RecordFactory, condition: str) -> None:
    """The on-failure record has Lambda's keys: request/response context, version, timestamp, KinesisBatchInfo."""
    batch = [record(), record(), record()]
    before = time.time()
    failure = source.on_failure(SHARD, batch, condition, 4, FUNCTION_ARN, "Unhandled")
    assert set(failure) == {"requestContext", "responseContext", "version", "timestamp", "KinesisBatchInfo"}
    request = failure["requestContext"]
    assert set(request) == {"requestId", "functionArn", "condition", "approximateInvokeCount"}
    assert uuid.UUID(request["requestId"])
    assert (request["functionArn"], request["condition"], request["approximateInvokeCount"]) == (FUNCTION_ARN, condition, 4)
    assert failure["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert failure["version"] == "1.0"
    assert ISO_MILLIS_Z.match(failure["timestamp"])
    stamped = datetime.fromisoformat(failure["timestamp"].replace("Z", "+00:00")).timestamp()
    assert before - 0.001 <= stamped <= time.time()
    assert failure["KinesisBatchInfo"] == {
        "shardId": SHARD,
        "startSequenceNumber": batch[0].sequence_number,
        "endSequenceNumber": batch[-1].sequence_number,
        "approximateArrivalOfFirstRecord": "2026-01-01T00:00:00.250Z",
        "approximateArrivalOfLastRecord": "2026-01-01T00:00:02.250Z",
        "batchSize": 3,
        "streamArn": STREAM_ARN,
    }


def test_on_failure_record_never_carries_record_data(source: EventSource, record: RecordFactory) -> None:
    """Only metadata goes to the destination: neither the data nor its base64 appears, and it is JSON."""
    secret = b"password=hunter2"
    failure = source.on_failure(SHARD, [record(data=secret)], CONDITION_RETRIES_EXHAUSTED, 1, FUNCTION_ARN, "Unhandled")
    text = json.dumps(failure)
    assert "hunter2" not in text
    assert base64.b64encode(secret).decode() not in text


def test_on_failure_of_one_record_starts_and_ends_on_it(source: EventSource, record: RecordFactory) -> None:
    """A single-record batch (what bisecting isolates) names that record as both start and end."""
    only = record()
    info = source.on_failure(SHARD, [only], CONDITION_RETRIES_EXHAUSTED, 7, FUNCTION_ARN, "Unhandled")["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        only.sequence_number,
        only.sequence_number,
        1,
    )
    assert info["approximateArrivalOfFirstRecord"] == info["approximateArrivalOfLastRecord"]


def _context(**overrides: Any) -> LambdaContext:
    fields: dict[str, Any] = {
        "function_name": "events-test",
        "invoked_function_arn": FUNCTION_ARN,
        "memory_limit_in_mb": 256,
        "timeout_s": 60.0,
    } | overrides
    return LambdaContext(**fields)


def test_context_offers_what_handlers_read() -> None:
    """The context has Lambda's attribute names: function name/ARN/version, memory, request id, log group."""
    context = _context()
    assert (context.function_name, context.invoked_function_arn, context.memory_limit_in_mb) == (
        "events-test",
        FUNCTION_ARN,
        256,
    )
    assert context.function_version == "$LATEST"
    assert context.log_group_name == "/aws/lambda/events-test"
    assert uuid.UUID(context.aws_request_id)
    assert _context().aws_request_id != context.aws_request_id  # one request id per invocation


def test_remaining_time_counts_down_from_the_timeout() -> None:
    """get_remaining_time_in_millis is the timeout minus the time since the invocation started, in ms."""
    fresh = _context(timeout_s=60.0)
    assert 59_000 < fresh.get_remaining_time_in_millis() <= 60_000
    started_2s_ago = _context(timeout_s=60.0, _started=time.monotonic() - 2.0)
    assert 57_000 < started_2s_ago.get_remaining_time_in_millis() <= 58_000
    assert isinstance(started_2s_ago.get_remaining_time_in_millis(), int)


def test_remaining_time_never_goes_negative() -> None:
    """Past the timeout the remaining time is 0, as handlers that budget work by it expect."""
    assert _context(timeout_s=1.0, _started=time.monotonic() - 5.0).get_remaining_time_in_millis() == 0
