"""Writes under misbehaving DynamoDB (tests/fakes.py): UnprocessedItems, throttling, deadlines, rejections."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from processor.handler import SAFETY_MARGIN_MS, handler
from processor.writer import MAX_BATCH_WRITE_ITEMS
from tests.fakes import FakeAwsServer, Handler, Reply
from tests.processor.conftest import FakeContext, kinesis_event, kinesis_record, x_v2

TABLE = "fake-EventData"
StartFake = Callable[[Handler], FakeAwsServer]


def requests_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    return list(body["RequestItems"][TABLE])


def ids_of(body: dict[str, Any]) -> list[str]:
    return [r["PutRequest"]["Item"]["Id"]["S"] for r in requests_of(body)]


def unprocessed(requests: list[dict[str, Any]]) -> dict[str, Any]:
    return {"UnprocessedItems": {TABLE: requests} if requests else {}}


def tweets(count: int) -> list[dict[str, Any]]:
    return [kinesis_record(x_v2(str(1000 + i), f"tweet {i}", username=f"user{i}")) for i in range(count)]


def failures(response: Mapping[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def sequence(record: dict[str, Any]) -> str:
    return str(record["kinesis"]["sequenceNumber"])


def no_time_left() -> FakeContext:
    """A context whose remaining time is all safety margin: one attempt per chunk, no retries."""
    return FakeContext(remaining_ms=SAFETY_MARGIN_MS)


def test_unprocessed_items_are_retried_until_written(fake_dynamodb: StartFake, context: FakeContext) -> None:
    """A first answer leaving all but one item unprocessed is followed by a retry of exactly those items."""
    calls = {"n": 0}

    def answer(operation: str, body: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        return unprocessed(requests_of(body)[1:] if calls["n"] == 1 else [])

    fake = fake_dynamodb(answer)
    records = tweets(5)
    assert handler(kinesis_event(*records), context) == {"batchItemFailures": []}
    first, second = fake.operations("BatchWriteItem")
    assert ids_of(second) == ids_of(first)[1:]


@pytest.mark.parametrize("code", ["ProvisionedThroughputExceededException", "ThrottlingException", "InternalServerError"])
def test_throttling_errors_are_retried_with_backoff(fake_dynamodb: StartFake, context: FakeContext, code: str) -> None:
    """Two throttled calls, then success: everything is written, nothing reported."""
    calls = {"n": 0}

    def answer(operation: str, body: dict[str, Any]) -> Reply | dict[str, Any]:
        calls["n"] += 1
        return Reply.error(code, status=500 if code == "InternalServerError" else 400) if calls["n"] <= 2 else unprocessed([])

    fake = fake_dynamodb(answer)
    assert handler(kinesis_event(*tweets(3)), context) == {"batchItemFailures": []}
    assert len(fake.operations("BatchWriteItem")) == 3


def test_remaining_time_exhausted_reports_unwritten_records_as_failures(fake_dynamodb: StartFake) -> None:
    """No time left for retries: the records whose items stayed unprocessed are batch item failures, the rest not."""
    fake = fake_dynamodb(
        lambda operation, body: unprocessed([r for r in requests_of(body) if int(ids_of({"RequestItems": {TABLE: [r]}})[0]) % 2])
    )
    records = tweets(6)
    response = handler(kinesis_event(*records), no_time_left())
    assert failures(response) == [sequence(r) for i, r in enumerate(records) if i % 2]
    assert len(fake.operations("BatchWriteItem")) == 1


def test_persistent_throttling_gives_up_at_the_deadline_and_reports_every_record(fake_dynamodb: StartFake) -> None:
    """Throttled forever: retries stop within the budget and the whole batch is reported, nothing lost."""
    fake = fake_dynamodb(lambda operation, body: Reply.error("ThrottlingException"))
    records = tweets(4)
    response = handler(kinesis_event(*records), FakeContext(remaining_ms=SAFETY_MARGIN_MS + 300))
    assert failures(response) == [sequence(r) for r in records]
    assert len(fake.operations("BatchWriteItem")) >= 1


def test_non_retryable_error_reports_the_batch_without_retrying(fake_dynamodb: StartFake, context: FakeContext) -> None:
    """A missing table cannot be fixed by retrying now: one call, every record reported for Lambda to retry."""
    fake = fake_dynamodb(lambda operation, body: Reply.error("ResourceNotFoundException", message="Requested resource not found"))
    records = tweets(3)
    assert failures(handler(kinesis_event(*records), context)) == [sequence(r) for r in records]
    assert len(fake.operations("BatchWriteItem")) == 1


def test_batches_are_split_into_chunks_of_25_written_in_parallel(fake_dynamodb: StartFake, context: FakeContext) -> None:
    """60 items: three BatchWriteItem calls of at most 25 distinct keys, in flight at the same time."""
    in_flight = {"now": 0, "max": 0}
    lock = threading.Lock()
    all_started = threading.Barrier(3, timeout=5)

    def answer(operation: str, body: dict[str, Any]) -> dict[str, Any]:
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        all_started.wait()  # only returns once the three chunks are being written concurrently
        with lock:
            in_flight["now"] -= 1
        return unprocessed([])

    fake = fake_dynamodb(answer)
    assert handler(kinesis_event(*tweets(60)), context) == {"batchItemFailures": []}
    bodies = fake.operations("BatchWriteItem")
    assert sorted(len(ids_of(b)) for b in bodies) == [10, MAX_BATCH_WRITE_ITEMS, MAX_BATCH_WRITE_ITEMS]
    assert sorted(i for b in bodies for i in ids_of(b)) == sorted(str(1000 + i) for i in range(60))
    assert in_flight["max"] == 3


def test_duplicates_share_the_fate_of_the_item_sent_for_them(fake_dynamodb: StartFake) -> None:
    """Two records with one key: one request is sent; when it stays unwritten both records are reported."""
    fake = fake_dynamodb(lambda operation, body: unprocessed(requests_of(body)))
    records = [kinesis_record(x_v2("7", "first")), kinesis_record(x_v2("8", "other")), kinesis_record(x_v2("7", "second"))]
    response = handler(kinesis_event(*records), no_time_left())
    assert sorted(failures(response)) == sorted(sequence(r) for r in records)
    [body] = fake.operations("BatchWriteItem")
    assert sorted(ids_of(body)) == ["7", "8"]
    assert next(r for r in requests_of(body) if r["PutRequest"]["Item"]["Id"]["S"] == "7")["PutRequest"]["Item"]["Message"] == {
        "S": "second"
    }


def test_validation_exception_isolates_and_dead_letters_only_the_rejected_item(
    fake_dynamodb: StartFake, context: FakeContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """DynamoDB rejects a call because of one item: each is retried alone, only that one is dead-lettered."""
    monkeypatch.setenv("DEAD_LETTER_FILE", str(tmp_path / "dead.jsonl"))

    def answer(operation: str, body: dict[str, Any]) -> Reply | dict[str, Any]:
        if "1002" in ids_of(body):
            return Reply.error("ValidationException", message="One or more parameter values were invalid")
        return unprocessed([])

    fake = fake_dynamodb(answer)
    records = tweets(4)
    assert handler(kinesis_event(*records), context) == {"batchItemFailures": []}
    written = [i for b in fake.operations("BatchWriteItem") if "1002" not in ids_of(b) for i in ids_of(b)]
    assert sorted(written) == ["1000", "1001", "1003"]
    [dead] = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert (dead["reason"], dead["sequenceNumber"]) == ("rejected_by_table", sequence(records[2]))
    assert "parameter values were invalid" in dead["detail"]


def test_an_aggregate_with_one_unwritten_user_record_is_reported_once(fake_dynamodb: StartFake) -> None:
    """A KPL record is retried as a whole when any of its user records was not written."""
    fake_dynamodb(
        lambda operation, body: unprocessed([r for r in requests_of(body) if r["PutRequest"]["Item"]["Id"]["S"] == "52"])
    )
    aggregator = RecordAggregator()
    for i in range(4):
        aggregator.add_user_record(f"pk{i}", json.dumps(x_v2(f"5{i}", "agg")).encode())
    partition_key, _, data = aggregator.clear_and_get().get_contents()
    aggregate = kinesis_record(data, partition_key=partition_key)
    plain = kinesis_record(x_v2("60", "plain"))
    assert failures(handler(kinesis_event(plain, aggregate), no_time_left())) == [sequence(aggregate)]
