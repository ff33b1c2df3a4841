"""The handler end to end against moto's server: items, partial batch responses and dead letters."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from processor import clients
from processor.config import ProcessorSettings
from processor.errors import ConfigurationError
from processor.handler import handler, make_handler
from processor.items import MAX_ITEM_BYTES
from tests.processor.conftest import ARRIVAL, SHARD, STREAM_ARN, FakeContext, MotoStack, kinesis_event, kinesis_record, x_v2

pytestmark = pytest.mark.slow


def test_every_record_becomes_one_item_with_the_documented_attributes(moto_stack: MotoStack, context: FakeContext) -> None:
    """A clean batch: no failures, one item per tweet with every attribute the table promises."""
    tweets = [x_v2(f"18610000000000000{i:02d}", f"tweet {i} #Kinesis", username=f"user_{i}") for i in range(30)]
    tweets[0]["data"]["entities"] = {"hashtags": [{"start": 9, "end": 17, "tag": "Kinesis"}]}
    response = handler(kinesis_event(*(kinesis_record(t) for t in tweets)), context)
    assert response == {"batchItemFailures": []}
    items = moto_stack.items()
    assert len(items) == 30
    first = next(i for i in items if i["Id"] == "1861000000000000000")
    assert first == {
        "Username": "user_0",
        "Id": "1861000000000000000",
        "Timestamp": "2026-01-01T11:59:58.000Z",
        "Message": "tweet 0 #Kinesis",
        "Lang": "en",
        "AuthorId": "1001",
        "Hashtags": ["Kinesis"],
        "Source": "x-v2",
        "IngestedAt": "2026-01-01T12:00:00.123Z",
    }


def test_poison_record_in_the_middle_is_dead_lettered_and_does_not_fail_the_batch(
    moto_stack: MotoStack, context: FakeContext
) -> None:
    """Bad JSON between good tweets: the others are written, the poison goes to the queue, nothing is retried."""
    good_before = kinesis_record(x_v2("1", "before"))
    poison = kinesis_record(b'{"data": {"id": "broken"', partition_key="poison-pk")
    good_after = kinesis_record(x_v2("2", "after"))
    response = handler(kinesis_event(good_before, poison, good_after), context)
    assert response == {"batchItemFailures": []}
    assert [i["Id"] for i in moto_stack.items()] == ["1", "2"]
    [dead] = moto_stack.dead_letters()
    assert dead["reason"] == "invalid_json"
    assert (dead["shardId"], dead["sequenceNumber"], dead["partitionKey"]) == (
        SHARD,
        poison["kinesis"]["sequenceNumber"],
        "poison-pk",
    )
    assert dead["eventSourceARN"] == STREAM_ARN
    assert base64.b64decode(dead["payloadBase64"]) == b'{"data": {"id": "broken"'
    assert "line 1 column" in dead["detail"]


@pytest.mark.parametrize(
    ("raw_base64", "reason"),
    [
        ("not base64!", "invalid_base64"),
        (base64.b64encode(b'{"text": "caf\xe9"}').decode(), "invalid_utf8"),
        (base64.b64encode(b"[1, 2]").decode(), "unmappable"),
        (base64.b64encode(b"\xf3\x89\x9a\xc2garbage-not-an-aggregate").decode(), "invalid_aggregate"),
    ],
)
def test_each_kind_of_bad_payload_is_dead_lettered_with_its_reason(
    moto_stack: MotoStack, context: FakeContext, raw_base64: str, reason: str
) -> None:
    """Bad base64, bad UTF-8, a non-object and a corrupt KPL aggregate are permanent failures, named as such."""
    response = handler(kinesis_event(kinesis_record(b"", raw_base64=raw_base64)), context)
    assert response == {"batchItemFailures": []}
    assert [d["reason"] for d in moto_stack.dead_letters()] == [reason]
    assert moto_stack.items() == []


def test_the_same_batch_twice_leaves_identical_items(moto_stack: MotoStack, context: FakeContext) -> None:
    """Processing a batch again (a Lambda retry) leaves exactly the same items, no duplicates."""
    event = kinesis_event(*(kinesis_record(x_v2(str(i), f"text {i} 🚀", username=f"u{i % 3}")) for i in range(10)))
    assert handler(event, context) == {"batchItemFailures": []}
    first = moto_stack.items()
    assert handler(json.loads(json.dumps(event)), context) == {"batchItemFailures": []}
    assert moto_stack.items() == first
    assert len(first) == 10


def test_duplicate_keys_within_a_batch_are_collapsed_last_one_wins(moto_stack: MotoStack, context: FakeContext) -> None:
    """The same tweet three times in one batch: one BatchWriteItem succeeds, the latest content is kept."""
    records = [kinesis_record(x_v2("42", f"version {n}"), arrival=ARRIVAL + n) for n in range(3)]
    assert handler(kinesis_event(*records), context) == {"batchItemFailures": []}
    [item] = moto_stack.items()
    assert (item["Message"], item["IngestedAt"]) == ("version 2", "2026-01-01T12:00:02.123Z")


def test_kpl_aggregated_records_become_one_item_per_user_record(moto_stack: MotoStack, context: FakeContext) -> None:
    """A KPL aggregate of five tweets (one of them poison) yields four items and one dead letter."""
    aggregator = RecordAggregator()
    payloads = [json.dumps(x_v2(f"9{i}", f"aggregated {i} مرحبا")).encode() for i in range(5)]
    payloads[3] = b"not json"
    for i, payload in enumerate(payloads):
        aggregator.add_user_record(f"pk-{i}", payload)
    partition_key, _, data = aggregator.clear_and_get().get_contents()
    record = kinesis_record(data, partition_key=partition_key)
    assert handler(kinesis_event(kinesis_record(x_v2("1", "plain")), record), context) == {"batchItemFailures": []}
    assert sorted(i["Id"] for i in moto_stack.items()) == ["1", "90", "91", "92", "94"]
    [dead] = moto_stack.dead_letters()
    assert (dead["reason"], dead["subSequenceNumber"], dead["partitionKey"]) == ("invalid_json", 3, "pk-3")
    assert base64.b64decode(dead["payloadBase64"]) == b"not json"


def test_item_over_400_kb_is_dead_lettered_others_written(moto_stack: MotoStack, context: FakeContext) -> None:
    """An item DynamoDB could not store is a permanent failure; the rest of the batch is written."""
    huge = kinesis_record(x_v2("big", "ж" * (MAX_ITEM_BYTES // 2)))
    assert handler(kinesis_event(kinesis_record(x_v2("small", "ok")), huge), context) == {"batchItemFailures": []}
    assert [i["Id"] for i in moto_stack.items()] == ["small"]
    [dead] = moto_stack.dead_letters()
    assert dead["reason"] == "item_too_large"
    # The base64 payload would not fit in an SQS message: the entry points at the record instead.
    assert "payloadBase64" not in dead
    assert dead["payloadPointer"] == {
        "stream": STREAM_ARN,
        "shardId": SHARD,
        "sequenceNumber": huge["kinesis"]["sequenceNumber"],
        "subSequenceNumber": None,
    }
    assert dead["payloadBytes"] > MAX_ITEM_BYTES


def test_dead_letter_queue_failure_reports_the_record_as_a_batch_item_failure(
    moto_stack: MotoStack, context: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the queue refuses the dead letter, the poison record is retried (reported), never dropped."""
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", moto_stack.queue_url + "-missing")
    poison = kinesis_record(b"\xff\xfe")
    response = handler(kinesis_event(kinesis_record(x_v2("1", "good")), poison), context)
    assert response == {"batchItemFailures": [{"itemIdentifier": poison["kinesis"]["sequenceNumber"]}]}
    assert [i["Id"] for i in moto_stack.items()] == ["1"]


def test_without_a_queue_dead_letters_go_to_the_configured_file(
    moto_stack: MotoStack, context: FakeContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """DEAD_LETTER_FILE receives one JSON line per dead letter when no queue is configured."""
    monkeypatch.delenv("DEAD_LETTER_QUEUE_URL")
    monkeypatch.setenv("DEAD_LETTER_FILE", str(tmp_path / "dead.jsonl"))
    records = [kinesis_record(b"nope"), kinesis_record({"unknown": "shape"})]
    assert handler(kinesis_event(*records), context) == {"batchItemFailures": []}
    lines = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text(encoding="ascii").splitlines()]
    assert [(d["reason"], d["sequenceNumber"]) for d in lines] == [
        ("invalid_json", records[0]["kinesis"]["sequenceNumber"]),
        ("unmappable", records[1]["kinesis"]["sequenceNumber"]),
    ]
    assert "GENERIC_MESSAGE_PATH" in lines[1]["detail"]


def test_without_any_destination_dead_letters_are_logged_as_errors(
    moto_stack: MotoStack, context: FakeContext, monkeypatch: pytest.MonkeyPatch, processor_logs: list[logging.LogRecord]
) -> None:
    """No queue and no file: the dead letter is logged at ERROR level with its payload, not lost."""
    monkeypatch.delenv("DEAD_LETTER_QUEUE_URL")
    record = kinesis_record(b"plain text")
    assert handler(kinesis_event(record), context) == {"batchItemFailures": []}
    [error] = [entry for entry in processor_logs if entry.levelno == logging.ERROR]
    dead = error.__dict__["dead_letter"]
    assert dead["sequenceNumber"] == record["kinesis"]["sequenceNumber"]
    assert base64.b64decode(dead["payloadBase64"]) == b"plain text"


def test_ttl_attribute_is_set_from_the_arrival_time_when_ttl_days_is_positive(
    moto_stack: MotoStack, context: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TTL_DAYS > 0 adds the TTL attribute, counted from the record's arrival (so retries agree)."""
    monkeypatch.setenv("TTL_DAYS", "7")
    assert handler(kinesis_event(kinesis_record(x_v2("1", "expires"))), context) == {"batchItemFailures": []}
    [item] = moto_stack.items()
    assert item[moto_stack.settings.table.ttl_attribute] == int(ARRIVAL) + 7 * 86_400


def test_an_empty_batch_succeeds_without_calls(moto_stack: MotoStack, context: FakeContext) -> None:
    """No records: an empty partial batch response and no table writes."""
    assert handler(kinesis_event(), context) == {"batchItemFailures": []}
    assert moto_stack.items() == []


def test_failures_from_both_phases_are_reported_in_stream_order(
    moto_stack: MotoStack, context: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead-letter failure (phase 1) and an unwritten item (phase 2) are reported by ascending position."""
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", moto_stack.queue_url + "-missing")
    monkeypatch.setenv("TABLE_NAME", moto_stack.settings.table_name + "-missing")
    records = [kinesis_record(x_v2("1", "unwritable")), kinesis_record(b"poison"), kinesis_record(x_v2("2", "unwritable"))]
    response = handler(kinesis_event(*records), context)
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [r["kinesis"]["sequenceNumber"] for r in records]


def test_an_unexpected_mapping_error_dead_letters_the_payload_instead_of_stalling(
    moto_stack: MotoStack, context: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that fails on one payload would fail on every retry: that payload is dead-lettered, the rest written."""
    from processor import handler as handler_module

    real_map_event = handler_module.map_event

    def buggy(event: Any, generic: Any) -> Any:
        if event["data"]["id"] == "2":
            raise KeyError("surprise")
        return real_map_event(event, generic)

    monkeypatch.setattr(handler_module, "map_event", buggy)
    records = [kinesis_record(x_v2(str(i), "t")) for i in range(1, 4)]
    assert handler(kinesis_event(*records), context) == {"batchItemFailures": []}
    assert [i["Id"] for i in moto_stack.items()] == ["1", "3"]
    [dead] = moto_stack.dead_letters()
    assert (dead["reason"], dead["sequenceNumber"]) == ("processing_error", records[1]["kinesis"]["sequenceNumber"])
    assert "KeyError" in dead["detail"]


def test_make_handler_uses_only_the_settings_and_clients_it_is_given(
    moto_stack: MotoStack, context: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler from make_handler writes and dead-letters through its own clients, whatever the environment says."""
    settings = ProcessorSettings(table_name=moto_stack.settings.table_name, dead_letter_queue_url=moto_stack.queue_url)
    for name in ("TABLE_NAME", "DEAD_LETTER_QUEUE_URL"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # environment-built clients would fail here
    clients.reset_clients()
    process = make_handler(settings, dynamodb=moto_stack.client("dynamodb"), sqs=moto_stack.client("sqs"))
    poison = kinesis_record(b"not json")
    assert process(kinesis_event(kinesis_record(x_v2("1", "given clients")), poison), context) == {"batchItemFailures": []}
    assert [i["Id"] for i in moto_stack.items()] == ["1"]
    assert [d["sequenceNumber"] for d in moto_stack.dead_letters()] == [poison["kinesis"]["sequenceNumber"]]


def test_make_handler_refuses_a_queue_without_an_sqs_client(moto_stack: MotoStack) -> None:
    """Settings naming a dead-letter queue need an SQS client: refused at construction, not at the first dead letter."""
    settings = ProcessorSettings(table_name="t", dead_letter_queue_url=moto_stack.queue_url)
    with pytest.raises(ConfigurationError, match="no SQS client"):
        make_handler(settings, dynamodb=moto_stack.client("dynamodb"))
