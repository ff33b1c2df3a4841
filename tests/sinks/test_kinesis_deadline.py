"""Kinesis sink deadlines: nothing is sent after one passes, and a deadline brought forward cuts a backoff short."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sinks.base import Deadline, Record
from sinks.kinesis import KinesisSink
from tests.sinks.conftest import (
    THROTTLED,
    RecordingEvents,
    ScriptedKinesis,
    assert_accounted,
    deliver,
    fail_positions,
    whole_call,
)

PTEE = "ProvisionedThroughputExceededException"
# With initial_backoff 30 s, seed 2 makes the first full-jitter delay ~28.7 s: a write that returns within
# a few seconds can only have been woken by the deadline.
LONG_BACKOFF = {"initial_backoff": 30.0, "max_backoff": 60.0}
LONG_BACKOFF_SEED = 2
WAKE_BOUND_S = 10.0  # far below the scheduled sleep, far above any scheduling hiccup


def test_an_expired_deadline_returns_everything_unsent_without_a_request(
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
    events: RecordingEvents,
) -> None:
    """A deadline already past: every entry is unsent, nothing is put, no request event is reported."""
    fake = kinesis_fake()
    sink = make_sink(fake.server.endpoint_url)
    batch = [sink.prepare(r) for r in make_records(3)]
    result = deliver(sink, batch, Deadline(time.monotonic() - 1))
    assert_accounted(batch, result)
    assert result.unsent == batch and not result.sent and not result.failed
    assert fake.server.operations("PutRecords") == []
    assert [name for name, _ in events.calls if name not in ("shard_map_refreshed",)] == []


def test_a_deadline_brought_forward_during_backoff_ends_the_write_promptly(
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
    events: RecordingEvents,
) -> None:
    """Shutdown sets the deadline while the sink sleeps before a re-send: accepted entries stay sent, the rest unsent."""
    fake = kinesis_fake(fail_positions({0: PTEE, 2: PTEE}))
    sink = make_sink(fake.server.endpoint_url, seed=LONG_BACKOFF_SEED, retry=LONG_BACKOFF)
    batch = [sink.prepare(r) for r in make_records(4)]
    deadline = Deadline()

    def shut_down() -> None:
        if events.retry_announced.wait(WAKE_BOUND_S):
            deadline.set(time.monotonic())

    stopper = threading.Thread(target=shut_down)
    stopper.start()
    started = time.monotonic()
    result = deliver(sink, batch, deadline)
    assert_accounted(batch, result)
    elapsed = time.monotonic() - started
    stopper.join()
    [retry] = events.named("records_retried")
    assert retry["delay_s"] > 20  # the sink really meant to sleep that long
    assert elapsed < WAKE_BOUND_S
    assert_accounted(batch, result)
    assert result.sent == [batch[1], batch[3]]
    assert result.unsent == [batch[0], batch[2]]
    assert len(fake.requests()) == 1


def test_a_deadline_passing_during_a_request_stops_before_the_backoff(
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
    events: RecordingEvents,
) -> None:
    """A deadline that passes while a throttled request is in flight: no retry is announced, all is unsent."""
    deadline = Deadline()

    def throttle_and_expire(body: dict[str, Any]) -> Any:
        deadline.set(time.monotonic())
        return whole_call(THROTTLED)(body)

    fake = kinesis_fake(throttle_and_expire)
    sink = make_sink(fake.server.endpoint_url)
    batch = [sink.prepare(r) for r in make_records(2)]
    result = deliver(sink, batch, deadline)
    assert_accounted(batch, result)
    assert result.unsent == batch
    assert len(fake.requests()) == 1
    assert events.named("records_retried") == []
    assert [e["code"] for e in events.named("put_failed")] == [PTEE]


def test_permanent_failures_stay_failed_when_the_deadline_cuts_the_retries(
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
) -> None:
    """An entry rejected for good is dead-lettered even if the deadline then leaves its neighbours unsent."""
    deadline = Deadline()
    partial = fail_positions({0: "InvalidArgumentException", 1: PTEE})

    def reject_and_expire(body: dict[str, Any]) -> Any:
        deadline.set(time.monotonic())
        return partial(body)

    fake = kinesis_fake(reject_and_expire)
    sink = make_sink(fake.server.endpoint_url)
    batch = [sink.prepare(r) for r in make_records(3)]
    result = deliver(sink, batch, deadline)
    assert_accounted(batch, result)
    assert result.sent == [batch[2]]
    assert [e for e, _, _ in result.failed] == [batch[0]]
    assert result.unsent == [batch[1]]
    assert len(fake.requests()) == 1


def test_a_backoff_longer_than_the_time_left_returns_at_once(
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
    events: RecordingEvents,
) -> None:
    """When the next re-send could only start after the deadline, write returns unsent without sleeping it out."""
    fake = kinesis_fake(whole_call(THROTTLED))
    sink = make_sink(fake.server.endpoint_url, seed=LONG_BACKOFF_SEED, retry=LONG_BACKOFF)
    batch = [sink.prepare(r) for r in make_records(2)]
    deadline = Deadline(time.monotonic() + WAKE_BOUND_S)
    result = deliver(sink, batch, deadline)
    assert_accounted(batch, result)
    assert not deadline.expired()  # it returned before the deadline: no pointless sleep
    assert result.unsent == batch
    assert len(fake.requests()) == 1
    assert events.named("records_retried") == []
