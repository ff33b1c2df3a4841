"""The Kinesis sink's start-up check: a wrong stream, missing rights, an unusable status or no answer at all
fail start-up with a message naming stream, region and endpoint; a passing blip does not."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sinks.base import SinkUnavailable
from sinks.kinesis import KinesisSink
from sinks.kinesis.health import STARTUP_CHECK_TIMEOUT_S
from tests.conftest import free_port
from tests.fakes import Reply
from tests.sinks.conftest import REGION, STREAM, ScriptedKinesis, stream_summary

MIB = 1024 * 1024
SHORT_CHECK_S = 1.0  # a check timeout that keeps the failing cases quick
# A refused connection fails in microseconds: the check gives up within its timeout plus one backoff step.
CHECK_BOUND_S = SHORT_CHECK_S + 5.0


def sequence(*replies: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """Answers DescribeStreamSummary with each reply in turn, then the last one for ever."""
    remaining = list(replies)

    def reply(body: dict[str, Any]) -> Any:
        return remaining.pop(0)(body) if len(remaining) > 1 else remaining[0](body)

    return reply


def test_an_active_stream_passes_the_check_with_one_describe_call(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink]
) -> None:
    """ACTIVE: check returns; it asked DescribeStreamSummary about the configured stream, and put nothing."""
    fake = kinesis_fake()
    make_sink(fake.server.endpoint_url).check(SHORT_CHECK_S)
    assert fake.server.operations("DescribeStreamSummary") == [{"StreamName": STREAM}]
    assert fake.server.operations("PutRecords") == []


@pytest.mark.parametrize(
    "code",
    ["ResourceNotFoundException", "AccessDeniedException", "UnrecognizedClientException", "KMSAccessDeniedException"],
)
def test_a_refusing_stream_fails_the_check_naming_stream_region_endpoint_and_error(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink], code: str
) -> None:
    """A permanent refusal fails at once (one call) with stream, region, endpoint, code and AWS message."""
    fake = kinesis_fake(describe=lambda _body: Reply.error(code, 400, f"{code} for {STREAM} (scripted)"))
    sink = make_sink(fake.server.endpoint_url)
    with pytest.raises(SinkUnavailable) as raised:
        sink.check(SHORT_CHECK_S)
    message = str(raised.value)
    for part in (repr(STREAM), REGION, fake.server.endpoint_url, code, "(scripted)"):
        assert part in message
    assert len(fake.server.operations("DescribeStreamSummary")) == 1


def test_a_deleting_stream_fails_the_check(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink]
) -> None:
    """A stream that will never take writes again (DELETING) fails the check, saying its status."""
    fake = kinesis_fake(describe=stream_summary("DELETING"))
    with pytest.raises(SinkUnavailable, match="status is DELETING"):
        make_sink(fake.server.endpoint_url).check(SHORT_CHECK_S)


def test_updating_passes_and_creating_or_throttling_is_waited_out(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink]
) -> None:
    """UPDATING takes writes; CREATING, a throttle and a 500 are retried within the check's time, then ACTIVE passes."""
    fake = kinesis_fake(describe=stream_summary("UPDATING"))
    make_sink(fake.server.endpoint_url).check(SHORT_CHECK_S)
    fake = kinesis_fake(
        describe=sequence(
            stream_summary("CREATING"),
            lambda _b: Reply.error("LimitExceededException", 400),
            lambda _b: Reply.error("InternalFailure", 500),
            stream_summary("ACTIVE"),
        )
    )
    make_sink(fake.server.endpoint_url).check(STARTUP_CHECK_TIMEOUT_S)
    assert len(fake.server.operations("DescribeStreamSummary")) == 4


def test_no_answer_fails_the_check_within_its_time(make_sink: Callable[..., KinesisSink]) -> None:
    """Nothing listens at the endpoint: retried, then a failure naming the endpoint, within the time bound."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    sink = make_sink(endpoint)
    started = time.monotonic()
    with pytest.raises(SinkUnavailable) as raised:
        sink.check(SHORT_CHECK_S)
    assert time.monotonic() - started < CHECK_BOUND_S
    message = str(raised.value)
    assert endpoint in message and "got no answer" in message and "attempts" in message


def test_a_record_limit_above_the_streams_maximum_fails_the_check(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink]
) -> None:
    """max_record_bytes 2 MiB for a stream whose MaxRecordSizeInKiB is 1024: refused before records are lost to it."""
    fake = kinesis_fake(describe=stream_summary("ACTIVE", max_record_kib=1024))
    with pytest.raises(SinkUnavailable, match="MaxRecordSizeInKiB"):
        make_sink(fake.server.endpoint_url, max_record_bytes=2 * MIB).check(SHORT_CHECK_S)
    make_sink(fake.server.endpoint_url, max_record_bytes=MIB).check(SHORT_CHECK_S)


def test_missing_credentials_fail_the_check_without_a_request(
    monkeypatch: pytest.MonkeyPatch, kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink]
) -> None:
    """No credentials in the AWS chain: the check fails saying so, and nothing reached the endpoint."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    fake = kinesis_fake()
    with pytest.raises(SinkUnavailable, match="no usable AWS credentials"):
        make_sink(fake.server.endpoint_url).check(SHORT_CHECK_S)
    assert fake.server.calls == []


@pytest.mark.slow
def test_the_daemon_refuses_to_start_on_a_wrong_stream_name(tmp_path: Path, daemon_factory: Any) -> None:
    """A mistyped stream: the daemon logs startup_failed for the sink check, naming the stream, and exits 1."""
    replay = tmp_path / "t.jsonl"
    replay.write_text('{"data": {"id": "1", "text": "x", "author_id": "2"}}\n', encoding="utf-8")
    body = f'sources:\n  - type: file\n    paths: ["{replay}"]\nsink:\n  type: kinesis\n  stream: no-such-stream\n'
    daemon = daemon_factory(body)
    daemon.start()
    assert daemon.process.wait(60) == 1
    failure = daemon.wait_for_event("startup_failed", timeout=1)
    assert failure["component"] == "sink kinesis check"
    assert "'no-such-stream'" in failure["error"] and "ResourceNotFoundException" in failure["error"]
    assert str(daemon.embedded_port) in failure["error"]
    assert not any(entry.get("event") == "daemon_started" for entry in daemon.logs())


def test_the_checked_stream_names_its_destination_by_arn_and_creation_time(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink]
) -> None:
    """After the check the sink names the very stream it writes to: ARN and creation time (a stream deleted and
    created again, as the embedded stack does at each start, is another destination), and nothing before it."""
    fake = kinesis_fake()
    sink = make_sink(fake.server.endpoint_url)
    assert sink.destination() is None
    sink.check(SHORT_CHECK_S)
    assert sink.destination() == f"arn:aws:kinesis:{REGION}:123456789012:stream/{STREAM}@2023-11-14T22:13:20+00:00"

    def recreated(body: dict[str, Any]) -> dict[str, Any]:
        answer = stream_summary()(body)
        answer["StreamDescriptionSummary"]["StreamCreationTimestamp"] = 1_800_000_000
        return answer

    again = make_sink(kinesis_fake(describe=recreated).server.endpoint_url)
    again.check(SHORT_CHECK_S)
    assert again.destination() != sink.destination()
