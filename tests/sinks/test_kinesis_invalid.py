"""Invalid requests cost only the entries at fault; request and entry metrics count in their own units;
10 MiB requests and records go through."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable
from typing import Any

from daemon.telemetry import Telemetry
from sinks.base import Record
from sinks.kinesis import KinesisSink, KinesisSinkConfig
from sinks.kinesis.records import KinesisEntry
from sinks.kinesis.retry import REASON_PUT_REJECTED
from tests.fakes import Reply
from tests.sinks.conftest import (
    FAST_TIMEOUTS,
    STREAM,
    TINY_RETRY,
    RecordingEvents,
    ScriptedKinesis,
    accept_all,
    assert_accounted,
    deliver,
    fail_positions,
    tweet_record,
)

PTEE = "ProvisionedThroughputExceededException"
MIB = 1024 * 1024
POISON = b"poison"


def refuse_poison(body: dict[str, Any]) -> Reply | dict[str, Any]:
    """A ValidationException naming no record for any request that carries the poison record."""
    if any(POISON in base64.b64decode(r["Data"]) for r in body["Records"]):
        return Reply.error("ValidationException", 400, "1 validation error detected: the record is unacceptable")
    return accept_all(body)


def wire(entries: list[KinesisEntry]) -> list[tuple[bytes, str]]:
    return [(e.record.data, e.partition_key) for e in entries]


def test_a_validation_error_naming_no_record_is_bisected_to_the_record_at_fault(
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
    events: RecordingEvents,
) -> None:
    """Only the poison record of 16 is dead-lettered; halving finds it in log2(16)+ requests, without backoff."""
    fake = kinesis_fake(*[refuse_poison] * 100)
    sink = make_sink(fake.server.endpoint_url)
    records = make_records(16)
    records[11] = tweet_record(POISON.decode(), author_id="666", origin="test:poison")
    batch = [sink.prepare(r) for r in records]
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert [(e, reason) for e, reason, _ in result.failed] == [(batch[11], REASON_PUT_REJECTED)]
    assert sorted(wire(result.sent)) == sorted(wire(batch[:11] + batch[12:]))
    accepted = [pair for request in fake.requests() if not any(POISON in d for d, _ in request) for pair in request]
    assert sorted(accepted) == sorted(wire(result.sent))  # every other record reached the stream exactly once
    assert len(fake.requests()) <= 2 * 4 + 2
    assert events.named("records_retried") == [] and events.named("sink_health") == []


def test_a_validation_error_naming_records_rejects_them_and_resends_the_rest_at_once(
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
    events: RecordingEvents,
) -> None:
    """'records.2.member' and 'records.5.member' (1-based) name positions 1 and 4: those two are put_rejected,
    the other four go out in the next request with no backoff."""
    message = (
        "2 validation errors detected: Value at 'records.2.member.data' failed to satisfy constraint: Member must "
        "have length less than or equal to 1048576; Value at 'records.5.member.data' failed to satisfy constraint"
    )
    fake = kinesis_fake(lambda _body: Reply.error("ValidationException", 400, message))
    sink = make_sink(fake.server.endpoint_url)
    batch = [sink.prepare(r) for r in make_records(6)]
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert [e for e, _, _ in result.failed] == [batch[1], batch[4]]
    assert all(reason == REASON_PUT_REJECTED and "records.2.member" in detail for _, reason, detail in result.failed)
    rest = [batch[0], batch[2], batch[3], batch[5]]
    assert fake.requests() == [wire(batch), wire(rest)]
    assert result.sent == rest
    assert events.named("records_retried") == []
    assert [(e["code"], e["records"]) for e in events.named("put_failed")] == [("ValidationException", 2)]


def test_request_and_entry_metrics_count_calls_and_entries(
    kinesis_fake: Callable[..., ScriptedKinesis], make_records: Callable[..., list[Record]]
) -> None:
    """Three calls (partial with 3 throttled entries, a 500, success): put_requests_total counts 1 per call by
    result; put_entry_errors_total counts entries (3 throttled, then the 3 re-sent in the failed call), not calls."""
    fake = kinesis_fake(fail_positions({0: PTEE, 2: PTEE, 4: PTEE}), lambda _b: Reply.error("InternalFailure", 500))
    telemetry = Telemetry("kinesis")
    config = KinesisSinkConfig.model_validate({"stream": STREAM, "endpoint_url": fake.server.endpoint_url,
                                               "retry": TINY_RETRY} | FAST_TIMEOUTS)
    sink = KinesisSink(config, telemetry, rng=random.Random(1))
    try:
        batch = [sink.prepare(r) for r in make_records(5)]
        result = deliver(sink, batch)
    finally:
        sink.close()
    assert_accounted(batch, result)
    assert len(result.sent) == 5 and [len(r) for r in fake.requests()] == [5, 3, 3]

    def sample(name: str, **labels: str) -> float | None:
        return telemetry.registry.get_sample_value(name, {"sink": "kinesis", **labels})

    assert sample("tweet_producer_put_requests_total", result="partial") == 1
    assert sample("tweet_producer_put_requests_total", result="server_error") == 1
    assert sample("tweet_producer_put_requests_total", result="success") == 1
    assert sample("tweet_producer_put_entry_errors_total", code=PTEE) == 3
    assert sample("tweet_producer_put_entry_errors_total", code="InternalFailure") == 3
    assert sample("tweet_producer_records_retried_total") == 3 + 3
    assert sample("tweet_producer_put_latency_seconds_count") == 3


def test_a_6_mib_record_goes_out_in_a_10_mib_request(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink]
) -> None:
    """With large records enabled (10 MiB request and record), a 6 MiB record is prepared, batched and sent
    byte for byte; the default 1 MiB limit would have rejected it."""
    fake = kinesis_fake()
    sink = make_sink(fake.server.endpoint_url, max_batch_bytes=10 * MIB, max_record_bytes=10 * MIB)
    data = random.Random(5).randbytes(6 * MIB)
    entry = sink.prepare(Record(data, {"author_id": "big"}, "test", "test:big"))
    result = deliver(sink, [entry])
    assert result.sent == [entry]
    assert fake.requests() == [[(data, "big")]]
