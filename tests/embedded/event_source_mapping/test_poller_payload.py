"""Lambda's synchronous invocation payload limit (6 MB, request and response) bounds batches and responses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from embedded.event_source_mapping.invocation import INVOKE_PAYLOAD_LIMIT_BYTES
from tests.embedded.event_source_mapping.conftest import RecordingFunction, RunnerFactory, Stream, wait_until

pytestmark = pytest.mark.slow

# Kinesis' default maximum record size is 1 MiB (data + partition key); base64 makes each about 1.4 MB in the event.
RECORD_BYTES = 1024 * 1024 - 64
RECORDS = 10


def test_batches_are_cut_to_fit_the_invocation_payload(make_runner: RunnerFactory, stream: Stream) -> None:
    """Ten 1 MiB records under BatchSize 100 go out in several events, each within 6 MB, all in stream order."""
    seqs = stream.put(*[("k", bytes([65 + i]) * RECORD_BYTES) for i in range(RECORDS)])
    h = make_runner(settings={"batch_size": 100})
    wait_until(lambda: h.function.delivered() == RECORDS, "every large record")
    sizes = [len(json.dumps(event).encode()) for event in h.function.events]
    assert len(sizes) > 1
    assert max(sizes) <= INVOKE_PAYLOAD_LIMIT_BYTES
    assert [seq for batch in h.function.batches for seq in batch] == seqs
    assert h.runner.stats.records_succeeded == RECORDS


def test_a_response_over_the_payload_limit_is_a_function_error(make_runner: RunnerFactory, stream: Stream) -> None:
    """A response Lambda could not return (over 6 MB) fails the invocation, which is retried like an exception."""
    stream.put_many(1)

    def behaviour(records: list[dict[str, Any]], call: int) -> Any:
        return {"batchItemFailures": [], "padding": "x" * INVOKE_PAYLOAD_LIMIT_BYTES} if call == 0 else None

    h = make_runner(RecordingFunction(behaviour))
    wait_until(lambda: h.runner.stats.records_succeeded == 1, "the retry's success")
    stats = h.runner.stats
    assert (stats.function_errors, stats.invocations) == (1, 2)
