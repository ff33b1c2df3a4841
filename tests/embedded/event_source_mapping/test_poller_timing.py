"""The batching window's bounds, and stop() returning promptly with the runner's production timings."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from embedded.event_source_mapping.poller import (
    ENDPOINT_BACKOFF_BASE_S,
    ENDPOINT_BACKOFF_CAP_S,
    IDLE_POLL_S,
    RETRY_BACKOFF_BASE_S,
    RETRY_BACKOFF_CAP_S,
)
from tests.embedded.event_source_mapping.conftest import Harness, RecordingFunction, RunnerFactory, Stream, wait_until

pytestmark = pytest.mark.slow

WINDOW_S = 1
# Slack above the window for the read, the thread hand-off and a loaded machine; far below a second window.
WINDOW_SLACK_S = 1.5
# Waits the runner could be caught in when stop() is called; stop() must cut each of them short.
LONG_WAIT_S = 30.0
# stop() may wait for one idle poll of the lanes (0.2 s in production); anything near LONG_WAIT_S is a bug.
STOP_PROMPT_S = 1.5
PRODUCTION_TIMINGS: dict[str, float] = {
    "idle_poll_s": IDLE_POLL_S,
    "retry_backoff_base_s": RETRY_BACKOFF_BASE_S,
    "retry_backoff_cap_s": RETRY_BACKOFF_CAP_S,
    "endpoint_backoff_base_s": ENDPOINT_BACKOFF_BASE_S,
    "endpoint_backoff_cap_s": ENDPOINT_BACKOFF_CAP_S,
}


class _CountingKinesis:
    """A Kinesis client that counts GetRecords calls and passes everything through."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.get_records_calls = 0

    def get_records(self, **kwargs: Any) -> Any:
        self.get_records_calls += 1
        return self._client.get_records(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _timed(started: list[float]) -> RecordingFunction:
    """A function noting when each invocation began (monotonic clock)."""
    return RecordingFunction(lambda records, _: started.append(time.monotonic()))


def _assert_stops_promptly(h: Harness) -> None:
    began = time.monotonic()
    h.stop(LONG_WAIT_S)
    took = time.monotonic() - began
    assert took < STOP_PROMPT_S, f"stop() took {took:.2f} s"
    assert not [t.name for t in threading.enumerate() if t.name.startswith("esm-")]


def test_a_lone_record_waits_for_the_window_but_not_much_longer(make_runner: RunnerFactory, stream: Stream) -> None:
    """A record that cannot fill a batch is invoked once the window has passed since it was read, not before."""
    started: list[float] = []
    make_runner(_timed(started), settings={"batch_size": 100, "maximum_batching_window_seconds": WINDOW_S})
    before_put = time.monotonic()
    stream.put_many(1)
    after_put = time.monotonic()
    wait_until(lambda: len(started) == 1, "the lone record's invocation")
    assert started[0] - before_put >= WINDOW_S
    assert started[0] - after_put <= WINDOW_S + WINDOW_SLACK_S


def test_a_full_batch_leaves_without_waiting_for_the_window(make_runner: RunnerFactory, stream: Stream) -> None:
    """BatchSize records go out at once even with the longest window Lambda allows; later ones form the next batch."""
    seqs = stream.put_many(7)
    h = make_runner(settings={"batch_size": 5, "maximum_batching_window_seconds": 300})
    wait_until(lambda: h.function.delivered() >= 5, "the full batch (not 300 s later)")
    assert h.function.batches == [seqs[:5]]


def test_stop_is_prompt_when_idle(make_runner: RunnerFactory, stream: Stream) -> None:
    """An idle runner polling an empty shard stops at once and leaves no thread."""
    kinesis = _CountingKinesis(stream.kinesis)
    h = make_runner(client=kinesis, **PRODUCTION_TIMINGS)
    # A second GetRecords means the reader went through an idle wait: the runner is settled in its idle loop.
    wait_until(lambda: kinesis.get_records_calls >= 2, "two polls of the empty shard")
    _assert_stops_promptly(h)


def test_stop_cuts_an_open_batching_window_short(make_runner: RunnerFactory, stream: Stream) -> None:
    """stop() during a 300 s window returns at once; the gathered record is unfinished, never invoked."""
    h = make_runner(settings={"maximum_batching_window_seconds": 300}, **PRODUCTION_TIMINGS)
    stream.put_many(1)
    wait_until(lambda: h.runner.stats.records_read == 1, "the record read into the window")
    _assert_stops_promptly(h)
    assert h.function.batches == []
    assert h.runner.stats.records_unfinished_at_stop == 1


def test_stop_cuts_a_retry_backoff_short(make_runner: RunnerFactory, stream: Stream) -> None:
    """stop() while a failed batch waits 30 s to be retried returns at once; the batch stays unfinished."""

    def fail(records: list[dict[str, Any]], _: int) -> None:
        raise RuntimeError("table unavailable")

    stream.put_many(2)  # before the runner starts, so one read returns both and the first batch holds both
    h = make_runner(
        RecordingFunction(fail),
        settings={"maximum_retry_attempts": -1},
        **(PRODUCTION_TIMINGS | {"retry_backoff_base_s": LONG_WAIT_S, "retry_backoff_cap_s": LONG_WAIT_S}),
    )
    wait_until(lambda: h.runner.stats.function_errors == 1, "the first failure")
    _assert_stops_promptly(h)
    stats = h.runner.stats
    assert (stats.invocations, stats.records_succeeded, stats.records_unfinished_at_stop) == (1, 0, 2)


def test_stop_cuts_an_endpoint_backoff_short(make_runner: RunnerFactory, stream: Stream) -> None:
    """stop() while the reader backs off 30 s from a failing endpoint (the stream is gone) returns at once."""
    h = make_runner(**(PRODUCTION_TIMINGS | {"endpoint_backoff_base_s": LONG_WAIT_S, "endpoint_backoff_cap_s": LONG_WAIT_S}))
    wait_until(lambda: h.runner.stats.shards_started == 1, "the shard's threads")
    stream.kinesis.delete_stream(StreamName=stream.name, EnforceConsumerDeletion=True)
    wait_until(lambda: h.runner.stats.endpoint_errors >= 1, "a failed GetRecords")
    _assert_stops_promptly(h)


def test_each_invocation_gets_a_fresh_context_counting_down(make_runner: RunnerFactory, stream: Stream) -> None:
    """The remaining time starts near the function timeout at every invocation and falls while the function runs."""
    timeout_s, busy_s = 5.0, 1.2
    readings: list[tuple[str, int, int]] = []

    def behaviour(records: list[dict[str, Any]], call: int) -> None:
        context = h.function.contexts[call]
        at_entry = context.get_remaining_time_in_millis()
        time.sleep(busy_s if call == 0 else 0.05)  # the function's own run time is what the context counts down
        readings.append((context.aws_request_id, at_entry, context.get_remaining_time_in_millis()))
        if call == 0:
            raise RuntimeError("retry me")

    h = make_runner(RecordingFunction(behaviour), function_timeout_s=timeout_s)
    stream.put_many(1)
    wait_until(lambda: len(readings) == 2, "the invocation and its retry")
    (first_id, first_entry, first_exit), (second_id, second_entry, second_exit) = readings
    assert timeout_s * 1000 - 500 < first_entry <= timeout_s * 1000
    assert first_exit <= first_entry - busy_s * 1000
    # The retry starts more than busy_s after the first call began: a reused context would show less time.
    assert second_entry > first_entry - busy_s * 1000 + 500
    assert second_exit < second_entry
    assert first_id != second_id
