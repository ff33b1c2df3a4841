"""How the runner treats partial batch responses, function errors, retries, record age and the on-failure
destination, against moto's Kinesis."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import pytest

from tests.embedded.event_source_mapping.conftest import FUNCTION_ARN, RecordingFunction, RunnerFactory, Stream, wait_until

ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _data(record: dict[str, Any]) -> bytes:
    return base64.b64decode(record["kinesis"]["data"])


def _fail_items(*seqs: str) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": s} for s in seqs]}


pytestmark = pytest.mark.slow

# A function timeout short enough that a test function can outlive it on purpose.
SHORT_FUNCTION_TIMEOUT_S = 0.1


def test_partial_failure_retries_from_the_lowest_failed_record(make_runner: RunnerFactory, stream: Stream) -> None:
    """The first response fails records 4 and 3 (of 6): the retry holds records 3..6, and then all succeed."""
    seqs = stream.put_many(6)
    h = make_runner(RecordingFunction(lambda recs, call: _fail_items(seqs[3], seqs[2]) if call == 0 else None))
    wait_until(lambda: h.runner.stats.records_succeeded == 6, "all six succeeded")
    assert h.function.batches == [seqs, seqs[2:]]
    stats = h.runner.stats
    assert (stats.partial_failures, stats.invocations, stats.records_delivered, stats.function_errors) == (1, 2, 10, 0)


def test_partial_response_ignored_without_report_batch_item_failures(make_runner: RunnerFactory, stream: Stream) -> None:
    """Without ReportBatchItemFailures, whatever the function returns means success, as in Lambda."""
    seqs = stream.put_many(3)
    h = make_runner(RecordingFunction(lambda recs, _: _fail_items(seqs[0])), settings={"report_batch_item_failures": False})
    wait_until(lambda: h.runner.stats.records_succeeded == 3, "all three succeeded")
    assert h.function.batches == [seqs]


def test_unknown_item_identifier_retries_the_whole_batch(make_runner: RunnerFactory, stream: Stream) -> None:
    """An identifier not in the batch makes the retry start at the first record, and is logged."""
    seqs = stream.put_many(3)
    h = make_runner(RecordingFunction(lambda recs, call: _fail_items("no-such-seq") if call == 0 else None))
    wait_until(lambda: h.runner.stats.records_succeeded == 3, "all three succeeded")
    assert h.function.batches == [seqs, seqs]
    assert h.runner.stats.invalid_responses == 1
    assert "no-such-seq" in h.log.events("esm_invalid_batch_response")[0]["reason"]


def test_unserializable_response_is_a_function_error(make_runner: RunnerFactory, stream: Stream) -> None:
    """A response Lambda could not serialize to JSON fails the invocation like an exception."""
    stream.put_many(2)
    h = make_runner(RecordingFunction(lambda recs, call: {"batchItemFailures": {1, 2}} if call == 0 else None))
    wait_until(lambda: h.runner.stats.records_succeeded == 2, "both succeeded")
    assert h.runner.stats.function_errors == 1


def test_exhausted_retries_send_lambdas_on_failure_record_and_move_on(
    make_runner: RunnerFactory, stream: Stream, kinesis: Any
) -> None:
    """A batch that always raises is tried 1 + MaximumRetryAttempts times, its metadata is sent, the shard continues."""
    bad = stream.put_many(3, prefix="bad")

    def behaviour(recs: list[dict[str, Any]], _: int) -> None:
        if any(_data(r).startswith(b"bad") for r in recs):
            raise RuntimeError("boom")

    h = make_runner(RecordingFunction(behaviour), settings={"maximum_retry_attempts": 2})
    wait_until(lambda: len(h.failures) == 1, "one on-failure record")
    good = stream.put_many(2, prefix="good")
    wait_until(lambda: h.runner.stats.records_succeeded == 2, "later records succeeded")
    assert h.function.batches[:3] == [bad, bad, bad]
    assert [seq for batch in h.function.batches[3:] for seq in batch] == good

    [failure] = h.failures
    stream_arn = kinesis.describe_stream_summary(StreamName=stream.name)["StreamDescriptionSummary"]["StreamARN"]
    request, info = failure["requestContext"], failure["KinesisBatchInfo"]
    assert request.pop("requestId")
    assert request == {"functionArn": FUNCTION_ARN, "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3}
    assert failure["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert failure["version"] == "1.0" and ISO_MILLIS.match(failure["timestamp"])
    assert ISO_MILLIS.match(info.pop("approximateArrivalOfFirstRecord"))
    assert ISO_MILLIS.match(info.pop("approximateArrivalOfLastRecord"))
    assert info == {
        "shardId": "shardId-000000000000",
        "startSequenceNumber": bad[0],
        "endSequenceNumber": bad[-1],
        "batchSize": 3,
        "streamArn": stream_arn,
    }
    stats = h.runner.stats
    assert (stats.batches_sent_to_on_failure, stats.records_sent_to_on_failure, stats.function_errors) == (1, 3, 3)


def test_bisect_isolates_the_poison_record(make_runner: RunnerFactory, stream: Stream) -> None:
    """With bisect on, halves are retried without using retries; only the poison record is sent on."""
    seqs = stream.put(*[("k", b"poison" if i == 5 else f"ok{i}".encode()) for i in range(8)])

    def behaviour(recs: list[dict[str, Any]], _: int) -> None:
        if any(_data(r) == b"poison" for r in recs):
            raise ValueError("poison")

    h = make_runner(RecordingFunction(behaviour), settings={"bisect_batch_on_function_error": True, "maximum_retry_attempts": 1})
    wait_until(lambda: len(h.failures) == 1 and h.runner.stats.records_succeeded == 7, "poison isolated")
    # 8 -> [0..3] ok, [4..7] fails -> [4,5] fails -> [4] ok, [5] fails, retried once -> sent; [6,7] ok
    assert h.function.batches == [seqs, seqs[:4], seqs[4:], seqs[4:6], [seqs[4]], [seqs[5]], [seqs[5]], seqs[6:]]
    info = h.failures[0]["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (seqs[5], seqs[5], 1)
    assert h.failures[0]["requestContext"]["approximateInvokeCount"] == 5


def test_partial_failure_with_bisect_splits_at_the_failed_record(make_runner: RunnerFactory, stream: Stream) -> None:
    """With bisect on, a partial response splits the batch there: the rest is retried without using a retry."""
    seqs = stream.put_many(4)
    h = make_runner(
        RecordingFunction(
            lambda recs, call: _fail_items(seqs[2]) if call == 0 else _fail_items(recs[0]["kinesis"]["sequenceNumber"])
        ),
        settings={"bisect_batch_on_function_error": True, "maximum_retry_attempts": 0},
    )
    wait_until(lambda: len(h.failures) == 1, "on-failure record")
    assert h.function.batches == [seqs, seqs[2:]]
    info = h.failures[0]["KinesisBatchInfo"]
    assert (info["startSequenceNumber"], info["batchSize"]) == (seqs[2], 2)
    assert "functionError" not in h.failures[0]["responseContext"]  # a partial response is not a function error


def test_records_past_maximum_age_are_sent_on_without_invoking(make_runner: RunnerFactory, stream: Stream) -> None:
    """Records older than MaximumRecordAgeInSeconds are never invoked: their metadata goes out as RecordAgeExceeded."""
    seqs = stream.put_many(3)
    h = make_runner(settings={"maximum_record_age_seconds": 60}, clock=lambda: time.time() + 120)
    wait_until(lambda: len(h.failures) == 1, "on-failure record")
    assert h.function.batches == []
    failure = h.failures[0]
    assert failure["requestContext"]["condition"] == "RecordAgeExceeded"
    assert failure["requestContext"]["approximateInvokeCount"] == 0
    assert failure["KinesisBatchInfo"]["startSequenceNumber"] == seqs[0] and failure["KinesisBatchInfo"]["batchSize"] == 3


def test_failing_records_are_retried_until_they_age_out(make_runner: RunnerFactory, stream: Stream) -> None:
    """With unlimited retries, a failing batch is retried until its records pass the maximum age."""
    stream.put_many(2)
    offset = [0.0]

    def behaviour(recs: list[dict[str, Any]], call: int) -> None:
        if call == 2:
            offset[0] = 120.0  # the records are now two minutes old
        raise RuntimeError("table unavailable")

    h = make_runner(
        RecordingFunction(behaviour),
        settings={"maximum_retry_attempts": -1, "maximum_record_age_seconds": 60},
        clock=lambda: time.time() + offset[0],
    )
    wait_until(lambda: len(h.failures) == 1, "on-failure record")
    assert len(h.function.batches) == 3
    assert h.failures[0]["requestContext"] | {"requestId": ""} == {
        "requestId": "",
        "functionArn": FUNCTION_ARN,
        "condition": "RecordAgeExceeded",
        "approximateInvokeCount": 3,
    }
    assert h.failures[0]["responseContext"]["functionError"] == "Unhandled"


def test_a_failing_destination_is_retried_and_logged(make_runner: RunnerFactory, stream: Stream) -> None:
    """The on-failure destination raising is logged and retried; the records count as sent only once it accepted."""
    stream.put_many(2)
    accepted: list[dict[str, Any]] = []

    def destination(failure: dict[str, Any]) -> None:
        if len(h.log.events("esm_on_failure_destination_failed")) < 2:
            raise ConnectionError("queue unreachable")
        accepted.append(failure)

    h = make_runner(RecordingFunction(lambda recs, _: 1 / 0), on_failure=destination, settings={"maximum_retry_attempts": 0})
    wait_until(lambda: len(accepted) == 1, "destination accepted")
    stats = h.runner.stats
    assert (stats.on_failure_errors, stats.batches_sent_to_on_failure, stats.records_sent_to_on_failure) == (2, 1, 2)


def test_an_invocation_past_the_function_timeout_fails(make_runner: RunnerFactory, stream: Stream) -> None:
    """A function that outlives its timeout is treated as Lambda would have: a failed invocation, retried."""
    stream.put_many(1)
    # The first call runs past the timeout: that run time is the subject of the test (twice the timeout).
    h = make_runner(
        RecordingFunction(lambda recs, call: time.sleep(2 * SHORT_FUNCTION_TIMEOUT_S) if call == 0 else None),
        function_timeout_s=SHORT_FUNCTION_TIMEOUT_S,
    )
    wait_until(lambda: h.runner.stats.records_succeeded == 1, "retry succeeded")
    stats = h.runner.stats
    assert (stats.function_timeouts, stats.function_errors, stats.invocations) == (1, 1, 2)
