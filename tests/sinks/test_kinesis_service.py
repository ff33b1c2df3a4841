"""KinesisService: the client it builds from the AWS chain, and how each kind of failed call is classified."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ProfileNotFound

from sinks.base import Deadline, Record
from sinks.kinesis import KinesisSink, KinesisSinkConfig
from sinks.kinesis.records import KinesisEntry, hash_key_of
from sinks.kinesis.retry import REASON_PUT_REJECTED
from sinks.kinesis.service import MALFORMED_RESPONSE, CallFailed, FailureKind, KinesisService, PutResponse
from tests.conftest import free_port
from tests.fakes import Reply
from tests.sinks.conftest import (
    RecordingEvents,
    ScriptedKinesis,
    accept_all,
    assert_accounted,
    deliver,
    fail_positions,
    tweet_record,
)

HOLD_FOR_S = 0.5  # long enough for many tiny backoffs, short enough for a quick test


def test_region_and_credentials_come_from_the_aws_chain(kinesis_fake: Callable[..., ScriptedKinesis]) -> None:
    """Without region/profile in the config the environment's region and keys are used; a request succeeds."""
    fake = kinesis_fake()
    service = KinesisService(KinesisSinkConfig(stream="s", endpoint_url=fake.server.endpoint_url))
    try:
        assert service.client.meta.region_name == "us-east-1"
        entry = KinesisEntry(tweet_record(), "pk", 10, hash_key_of("pk"))
        assert isinstance(service.put_records([entry]), PutResponse)
    finally:
        service.close()


def test_configured_region_and_timeouts_reach_the_client_and_botocore_does_not_retry() -> None:
    """region, connect_timeout and read_timeout are applied; botocore makes one attempt (the sink retries)."""
    config = KinesisSinkConfig(stream="s", region="eu-west-3", connect_timeout=1.5, read_timeout=7.0)
    service = KinesisService(config)
    try:
        meta = service.client.meta
        assert meta.region_name == "eu-west-3"
        assert (meta.config.connect_timeout, meta.config.read_timeout) == (1.5, 7.0)
        assert meta.config.retries["total_max_attempts"] == 1
    finally:
        service.close()


def test_a_named_profile_is_used_and_a_missing_one_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kinesis_fake: Callable[..., ScriptedKinesis]
) -> None:
    """profile selects a section of the AWS config files; an unknown profile fails at construction, naming it."""
    credentials = tmp_path / "credentials"
    credentials.write_text("[producer]\naws_access_key_id = profilekey\naws_secret_access_key = profile-not-a-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    fake = kinesis_fake()
    service = KinesisService(KinesisSinkConfig(stream="s", profile="producer", endpoint_url=fake.server.endpoint_url))
    try:
        assert service.client._request_signer._credentials.access_key == "profilekey"
        assert isinstance(service.put_records([KinesisEntry(tweet_record(), "pk", 10, hash_key_of("pk"))]), PutResponse)
    finally:
        service.close()
    with pytest.raises(ProfileNotFound, match="nobody"):
        KinesisService(KinesisSinkConfig(stream="s", profile="nobody"))


def test_missing_credentials_hold_the_records_and_mark_the_sink_unhealthy(
    monkeypatch: pytest.MonkeyPatch,
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    events: RecordingEvents,
) -> None:
    """No credentials anywhere: nothing is sent and nothing dead-lettered (max_attempts does not apply); the
    records come back unsent at the deadline and the sink reported itself unhealthy with NoCredentials."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    fake = kinesis_fake()
    sink = make_sink(fake.server.endpoint_url, retry={"max_attempts": 2})
    batch = [sink.prepare(tweet_record())]
    result = deliver(sink, batch, Deadline(time.monotonic() + HOLD_FOR_S))
    assert_accounted(batch, result)
    assert fake.server.calls == []
    assert result.unsent == batch and not result.failed
    assert len(events.named("put_failed")) > 2  # kept trying past max_attempts
    assert {e["result"] for e in events.named("put_requested")} == {"credentials"}
    [health] = events.named("sink_health")
    assert (health["healthy"], health["reason"]) == (False, "NoCredentials")


def test_a_refused_connection_is_retriable() -> None:
    """Nothing listening at the endpoint: a retriable CallFailed, not an exception."""
    config = KinesisSinkConfig(stream="s", endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout=1.0)
    service = KinesisService(config)
    try:
        outcome = service.put_records([KinesisEntry(tweet_record(), "pk", 10, hash_key_of("pk"))])
    finally:
        service.close()
    assert isinstance(outcome, CallFailed)
    assert outcome.kind is FailureKind.NETWORK and "Connect" in outcome.code


def test_an_entry_botocore_refuses_is_dead_lettered_alone_and_the_rest_sent(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink], events: RecordingEvents
) -> None:
    """An empty key got past prepare: botocore's path refuses it (ParamValidationError naming it); the wire
    path sends it and Kinesis answers a ValidationException naming it: only that entry is put_rejected, the
    other 499 of the batch go out in the next request, at once."""

    def refuse_empty_keys(body: dict[str, Any]) -> Reply | dict[str, Any]:
        empty = [i for i, r in enumerate(body["Records"]) if not r["PartitionKey"]]
        if not empty:
            return accept_all(body)
        message = "; ".join(f"Value '' at 'records.{i + 1}.member.partitionKey' failed to satisfy constraint: "
                            "Member must have length greater than or equal to 1" for i in empty)
        return Reply.error("ValidationException", 400, f"{len(empty)} validation error detected: {message}")

    fake = kinesis_fake(refuse_empty_keys, refuse_empty_keys)
    sink = make_sink(fake.server.endpoint_url)
    good = [sink.prepare(tweet_record(tweet_id=str(i), author_id=str(i))) for i in range(499)]
    record: Record = tweet_record(tweet_id="bad")
    bad = KinesisEntry(record, "", len(record.data), 0)
    batch = [*good[:200], bad, *good[200:]]
    outcome = sink.service.put_records(batch)
    assert isinstance(outcome, CallFailed) and outcome.kind is FailureKind.INVALID
    assert [position for position, _ in outcome.invalid] == [200]
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert [(e, reason) for e, reason, _ in result.failed] == [(bad, REASON_PUT_REJECTED)]
    assert "partitionKey" in result.failed[0][2]
    assert result.sent == good
    wire = [[(e.record.data, e.partition_key) for e in request] for request in (batch, good)]
    assert fake.requests() == wire
    assert [e["result"] for e in events.named("put_requested")] == ["invalid", "success"]
    assert [(e["code"], e["records"]) for e in events.named("put_failed")] == [("ValidationException", 1)]
    assert events.named("records_retried") == []


def test_per_entry_error_codes_count_even_when_failed_record_count_says_zero(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink]
) -> None:
    """The per-entry ErrorCode decides: an entry marked failed is re-sent although FailedRecordCount is 0."""
    def inconsistent(body: dict[str, Any]) -> dict[str, Any]:
        response = fail_positions({1: "ProvisionedThroughputExceededException"})(body)
        return response | {"FailedRecordCount": 0}

    fake = kinesis_fake(inconsistent)
    sink = make_sink(fake.server.endpoint_url)
    batch = [sink.prepare(tweet_record(tweet_id=str(i), author_id=str(i))) for i in range(3)]
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert result.sent == [batch[0], batch[2], batch[1]]
    assert [len(request) for request in fake.requests()] == [3, 1]


def test_a_response_without_one_result_per_record_resends_the_batch(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink], events: RecordingEvents
) -> None:
    """Records missing from a 200 answer are not assumed delivered: the whole request is retried."""
    def truncated(body: dict[str, Any]) -> dict[str, Any]:
        response = accept_all(body)
        return response | {"Records": response["Records"][:1]}

    fake = kinesis_fake(truncated)
    sink = make_sink(fake.server.endpoint_url)
    batch = [sink.prepare(tweet_record(tweet_id=str(i), author_id=str(i))) for i in range(3)]
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert result.sent == batch
    assert [len(request) for request in fake.requests()] == [3, 3]
    [failed] = events.named("put_failed")
    assert (failed["code"], failed["detail"]) == (MALFORMED_RESPONSE, "malformed: 1 results for 3 records")


@pytest.mark.parametrize(
    ("reply", "code", "kind"),
    [
        (Reply.error("ProvisionedThroughputExceededException", 400), "ProvisionedThroughputExceededException",
         FailureKind.THROTTLED),
        (Reply.error("LimitExceededException", 400), "LimitExceededException", FailureKind.THROTTLED),
        (Reply.error("SlowDownPlease", 429), "SlowDownPlease", FailureKind.THROTTLED),
        (Reply.error("InternalFailure", 500), "InternalFailure", FailureKind.SERVER_ERROR),
        (Reply.error("SomethingUnheardOf", 503), "SomethingUnheardOf", FailureKind.SERVER_ERROR),
        (Reply.error("ExpiredTokenException", 400), "ExpiredTokenException", FailureKind.CREDENTIALS),
        (Reply.error("UnrecognizedClientException", 400), "UnrecognizedClientException", FailureKind.CREDENTIALS),
        (Reply.error("ValidationException", 400), "ValidationException", FailureKind.INVALID),
        (Reply.error("ValidationException", 400, "Value 'a b' at 'streamName' failed to satisfy constraint"),
         "ValidationException", FailureKind.PERMANENT),
        (Reply.error("AccessDeniedException", 400), "AccessDeniedException", FailureKind.PERMANENT),
        (Reply.error("ResourceNotFoundException", 400), "ResourceNotFoundException", FailureKind.PERMANENT),
        (Reply.error("ResourceInUseException", 400), "ResourceInUseException", FailureKind.PERMANENT),
        (Reply.error("KMSNotFoundException", 400), "KMSNotFoundException", FailureKind.PERMANENT),
        (Reply.error("KMSInvalidStateException", 400), "KMSInvalidStateException", FailureKind.PERMANENT),
        (Reply.error("SomethingNewException", 400), "SomethingNewException", FailureKind.PERMANENT),
        (Reply(drop_connection=True), None, FailureKind.NETWORK),
    ],
    ids=["throughput", "limit", "429", "500", "503-unknown", "expired-token", "unrecognized-client", "validation",
         "validation-stream-name", "denied", "not-found", "in-use", "kms", "kms-state", "unknown-4xx", "dropped"],
)
def test_whole_call_failures_are_classified(
    kinesis_fake: Callable[..., ScriptedKinesis], reply: Reply, code: str | None, kind: FailureKind
) -> None:
    """Each error answer from a real HTTP endpoint becomes a CallFailed of the right kind; stream-level kinds
    (credentials, permanent) are the ones that hold records."""
    fake = kinesis_fake(lambda _body: reply)
    service = KinesisService(KinesisSinkConfig(stream="s", endpoint_url=fake.server.endpoint_url))
    try:
        outcome = service.put_records([KinesisEntry(tweet_record(), "pk", 10, hash_key_of("pk"))])
    finally:
        service.close()
    assert isinstance(outcome, CallFailed)
    assert outcome.kind is kind
    assert outcome.kind.stream_level is (kind in (FailureKind.CREDENTIALS, FailureKind.PERMANENT))
    if code is not None:
        assert outcome.code == code
