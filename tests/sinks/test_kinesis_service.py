"""KinesisService: the client it builds from the AWS chain, and how each kind of failed call is classified."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ProfileNotFound

from sinks.base import Deadline, Record
from sinks.kinesis import KinesisSink, KinesisSinkConfig
from sinks.kinesis.records import KinesisEntry
from sinks.kinesis.retry import REASON_PUT_REJECTED, REASON_RETRIES_EXHAUSTED
from sinks.kinesis.service import MALFORMED_RESPONSE, CallFailed, FailureKind, KinesisService, PutResponse
from tests.conftest import free_port
from tests.fakes import Reply
from tests.sinks.conftest import RecordingEvents, ScriptedKinesis, accept_all, assert_accounted, fail_positions, tweet_record


def test_region_and_credentials_come_from_the_aws_chain(kinesis_fake: Callable[..., ScriptedKinesis]) -> None:
    """Without region/profile in the config the environment's region and keys are used; a request succeeds."""
    fake = kinesis_fake()
    service = KinesisService(KinesisSinkConfig(stream="s", endpoint_url=fake.server.endpoint_url))
    try:
        assert service.client.meta.region_name == "us-east-1"
        entry = KinesisEntry(tweet_record(), "pk", 10)
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
        assert isinstance(service.put_records([KinesisEntry(tweet_record(), "pk", 10)]), PutResponse)
    finally:
        service.close()
    with pytest.raises(ProfileNotFound, match="nobody"):
        KinesisService(KinesisSinkConfig(stream="s", profile="nobody"))


def test_missing_credentials_are_retriable_and_end_as_retries_exhausted(
    monkeypatch: pytest.MonkeyPatch,
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    events: RecordingEvents,
) -> None:
    """No credentials anywhere: the call fails before any request as NoCredentials (retriable), never silently."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    fake = kinesis_fake()
    sink = make_sink(fake.server.endpoint_url, retry={"max_attempts": 2})
    batch = [sink.prepare(tweet_record())]
    result = sink.write(batch, Deadline())
    assert_accounted(batch, result)
    assert fake.server.calls == []
    assert [(reason, "NoCredentials" in detail) for _, reason, detail in result.failed] == [(REASON_RETRIES_EXHAUSTED, True)]
    assert [e["code"] for e in events.named("put_failed")] == ["NoCredentials", "NoCredentials"]


def test_a_refused_connection_is_retriable() -> None:
    """Nothing listening at the endpoint: a retriable CallFailed, not an exception."""
    config = KinesisSinkConfig(stream="s", endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout=1.0)
    service = KinesisService(config)
    try:
        outcome = service.put_records([KinesisEntry(tweet_record(), "pk", 10)])
    finally:
        service.close()
    assert isinstance(outcome, CallFailed) and outcome.retriable
    assert outcome.kind is FailureKind.NETWORK and "Connect" in outcome.code


def test_a_request_botocore_refuses_to_build_is_permanent(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink]
) -> None:
    """An entry failing botocore's parameter validation (empty key) is put_rejected, not retried forever."""
    fake = kinesis_fake()
    sink = make_sink(fake.server.endpoint_url)
    record: Record = tweet_record()
    bad = KinesisEntry(record, "", len(record.data))
    outcome = sink.service.put_records([bad])
    assert isinstance(outcome, CallFailed) and outcome.kind is FailureKind.PERMANENT and not outcome.retriable
    result = sink.write([bad], Deadline())
    assert_accounted([bad], result)
    assert [(e, reason) for e, reason, _ in result.failed] == [(bad, REASON_PUT_REJECTED)]
    assert fake.server.calls == []


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
    result = sink.write(batch, Deadline())
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
    result = sink.write(batch, Deadline())
    assert_accounted(batch, result)
    assert result.sent == batch
    assert [len(request) for request in fake.requests()] == [3, 3]
    [failed] = events.named("put_failed")
    assert (failed["code"], failed["detail"]) == (MALFORMED_RESPONSE, "malformed_response: 1 results for 3 records")


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
        (Reply.error("ValidationException", 400), "ValidationException", FailureKind.PERMANENT),
        (Reply.error("AccessDeniedException", 400), "AccessDeniedException", FailureKind.PERMANENT),
        (Reply.error("ResourceNotFoundException", 400), "ResourceNotFoundException", FailureKind.PERMANENT),
        (Reply.error("KMSNotFoundException", 400), "KMSNotFoundException", FailureKind.PERMANENT),
        (Reply(drop_connection=True), None, FailureKind.NETWORK),
    ],
    ids=["throughput", "limit", "429", "500", "503-unknown", "expired-token", "validation", "denied", "not-found",
         "kms", "dropped"],
)
def test_whole_call_failures_are_classified(
    kinesis_fake: Callable[..., ScriptedKinesis], reply: Reply, code: str | None, kind: FailureKind
) -> None:
    """Each error answer from a real HTTP endpoint becomes a CallFailed of the right kind; only PERMANENT is final."""
    fake = kinesis_fake(lambda _body: reply)
    service = KinesisService(KinesisSinkConfig(stream="s", endpoint_url=fake.server.endpoint_url))
    try:
        outcome = service.put_records([KinesisEntry(tweet_record(), "pk", 10)])
    finally:
        service.close()
    assert isinstance(outcome, CallFailed)
    assert outcome.kind is kind and outcome.retriable is (kind is not FailureKind.PERMANENT)
    if code is not None:
        assert outcome.code == code
