"""Metrics and concurrency: EMF only inside Lambda, per-invocation flushes, safe from several threads."""

from __future__ import annotations

import json
import threading

import pytest

from processor import telemetry
from processor.handler import handler
from tests.processor.conftest import FakeContext, MotoStack, kinesis_event, kinesis_record, x_v2


def emf_documents(out: str) -> list[dict[str, object]]:
    return [doc for doc in (json.loads(line) for line in out.splitlines() if line.startswith("{")) if "_aws" in doc]


@pytest.mark.slow
def test_outside_lambda_no_metrics_are_printed_but_totals_count(
    moto_stack: MotoStack, context: FakeContext, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a host process (the embedded stack) stdout gets no EMF lines; totals() still counts."""
    before = telemetry.totals()
    assert handler(kinesis_event(kinesis_record(x_v2("1", "a")), kinesis_record(b"bad")), context) == {"batchItemFailures": []}
    assert emf_documents(capsys.readouterr().out) == []
    after = telemetry.totals()
    assert after[telemetry.RECORDS] - before.get(telemetry.RECORDS, 0) == 2
    assert after[telemetry.ITEMS_WRITTEN] - before.get(telemetry.ITEMS_WRITTEN, 0) == 1
    assert after["Failures.invalid_json"] - before.get("Failures.invalid_json", 0) == 1


@pytest.mark.slow
def test_inside_lambda_each_invocation_flushes_emf_metrics(
    moto_stack: MotoStack, context: FakeContext, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In Lambda: one EMF document with the counts and duration, and one per failure reason."""
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.14")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    handler(kinesis_event(kinesis_record(x_v2("1", "a")), kinesis_record(b"bad")), context)
    documents = emf_documents(capsys.readouterr().out)
    main = next(d for d in documents if "Records" in d)
    assert (main["Records"], main["ItemsWritten"], main["DeadLettered"]) == ([2.0], [1.0], [1.0])
    assert "BatchDuration" in main
    by_reason = next(d for d in documents if "Failures" in d)
    assert (by_reason["Reason"], by_reason["Failures"]) == ("invalid_json", [1.0])
    assert all(d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == telemetry.NAMESPACE for d in documents)  # type: ignore[index]


@pytest.mark.slow
def test_concurrent_invocations_in_one_process_write_everything_and_count_exactly(moto_stack: MotoStack) -> None:
    """Four threads invoking the handler at once (as the embedded stack may): every item, exact totals."""
    before = telemetry.totals().get(telemetry.ITEMS_WRITTEN, 0)
    events = [kinesis_event(*(kinesis_record(x_v2(f"{t}-{i}", "concurrent ✓")) for i in range(40))) for t in range(4)]
    responses: list[object] = []
    start = threading.Barrier(len(events))

    def invoke(event: dict[str, object]) -> None:
        start.wait()
        responses.append(handler(event, FakeContext()))

    threads = [threading.Thread(target=invoke, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert responses == [{"batchItemFailures": []}] * 4
    assert len(moto_stack.items()) == 160
    assert telemetry.totals()[telemetry.ITEMS_WRITTEN] - before == 160
