"""The event-source runner against moto's Kinesis: event shape, batching, starting positions, ordering, stop."""

from __future__ import annotations

import base64
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from embedded.event_source_mapping.poller import EventSourcePoller
from infra.settings import EventSourceMappingSettings
from tests.embedded.event_source_mapping.conftest import (
    FUNCTION_ARN,
    REGION,
    RecordingFunction,
    RunnerFactory,
    Stream,
    wait_until,
)

pytestmark = pytest.mark.slow

# Kinesis arrival timestamps have millisecond precision: this gap keeps a timestamp clear of both neighbours.
ARRIVAL_GAP_S = 0.05
# How long stop() is watched to keep waiting for an invocation that has not returned (ends early if it returns).
STOP_WAITS_WINDOW_S = 0.1


def test_event_and_context_are_shaped_like_lambdas(make_runner: RunnerFactory, stream: Stream, kinesis: Any) -> None:
    """Each record carries Lambda's fields (base64 data, float arrival time, eventID, ARNs); the context counts down."""
    before = time.time()
    [seq] = stream.put(("alice", "héllo wörld".encode()))
    h = make_runner(function_timeout_s=30.0)
    wait_until(lambda: h.function.delivered() == 1, "one delivery")

    [record] = h.function.events[0]["Records"]
    stream_arn = kinesis.describe_stream_summary(StreamName=stream.name)["StreamDescriptionSummary"]["StreamARN"]
    arrival = record["kinesis"].pop("approximateArrivalTimestamp")
    assert isinstance(arrival, float) and before - 5 <= arrival <= time.time() + 5
    assert record == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "alice",
            "sequenceNumber": seq,
            "data": base64.b64encode("héllo wörld".encode()).decode(),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000000:{seq}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/test-DDBEventProcessor-role",
        "awsRegion": REGION,
        "eventSourceARN": stream_arn,
    }
    context = h.function.contexts[0]
    assert (context.function_name, context.invoked_function_arn) == ("test-DDBEventProcessor", FUNCTION_ARN)
    assert context.memory_limit_in_mb == 256 and context.aws_request_id
    assert 0 < context.get_remaining_time_in_millis() <= 30_000


def test_batch_size_caps_each_invocation(make_runner: RunnerFactory, stream: Stream) -> None:
    """Ten queued records with BatchSize 4 arrive as batches of 4, 4 and 2, in stream order."""
    seqs = stream.put_many(10)
    h = make_runner(settings={"batch_size": 4})
    wait_until(lambda: h.function.delivered() == 10, "ten deliveries")
    assert h.function.batches == [seqs[0:4], seqs[4:8], seqs[8:10]]


def test_zero_window_delivers_what_one_read_returned_as_one_batch(make_runner: RunnerFactory, stream: Stream) -> None:
    """With no batching window, the records one GetRecords call returned form one invocation."""
    seqs = stream.put_many(10)
    h = make_runner(settings={"batch_size": 100, "maximum_batching_window_seconds": 0})
    wait_until(lambda: h.function.delivered() == 10, "ten deliveries")
    assert h.function.batches == [seqs]


def test_batching_window_gathers_records_arriving_later(make_runner: RunnerFactory, stream: Stream) -> None:
    """Within the window, records put in two rounds go out together; the batch leaves without filling up."""
    h = make_runner(settings={"batch_size": 100, "maximum_batching_window_seconds": 3})
    first = stream.put_many(2, prefix="a")
    # The first records are read (the window is open) before the others are put: they arrive later.
    wait_until(lambda: h.runner.stats.records_read == 2, "the first records read into the window")
    second = stream.put_many(2, prefix="b")
    wait_until(lambda: h.function.delivered() == 4, "four deliveries")
    assert h.function.batches == [first + second]


def test_latest_skips_records_put_before_start(make_runner: RunnerFactory, stream: Stream) -> None:
    """LATEST delivers only what was put after start(); TRIM_HORIZON (the default) delivers everything."""
    old = stream.put_many(3, prefix="old")
    latest = make_runner(settings={"starting_position": "LATEST"})
    new = stream.put_many(2, prefix="new")
    trim = make_runner()
    wait_until(lambda: latest.function.delivered() == 2 and trim.function.delivered() == 5, "deliveries")
    assert [s for b in latest.function.batches for s in b] == new
    assert [s for b in trim.function.batches for s in b] == old + new


def test_at_timestamp_starts_at_the_given_time(make_runner: RunnerFactory, stream: Stream) -> None:
    """AT_TIMESTAMP delivers the records that arrived at or after the timestamp."""
    stream.put_many(3, prefix="before")
    # The gap is what AT_TIMESTAMP selects on, not a synchronisation: it keeps `at` clear of both groups'
    # arrival times despite their millisecond precision, and is far too short to matter otherwise.
    time.sleep(ARRIVAL_GAP_S)
    at = time.time()
    time.sleep(ARRIVAL_GAP_S)
    after = stream.put_many(2, prefix="after")
    h = make_runner(settings={"starting_position": "AT_TIMESTAMP"}, at_timestamp=at)
    wait_until(lambda: h.function.delivered() == 2, "two deliveries")
    assert h.function.batches == [after]


def _tracking(active: dict[str, int], lock: threading.Lock, overlap: threading.Event, log: list[str]) -> Any:
    """A behaviour that fails the test if one key is processed twice at once, and notes global overlap."""

    def behaviour(records: list[dict[str, Any]], _: int) -> None:
        keys = {r["kinesis"]["partitionKey"] for r in records}
        with lock:
            assert not any(active[k] for k in keys), "a partition key was processed concurrently"
            for k in keys:
                active[k] += 1
            if sum(1 for v in active.values() if v) > len(keys):
                overlap.set()
        overlap.wait(0.2)  # give another lane the chance to overlap; never a correctness condition
        with lock:
            for k in keys:
                active[k] -= 1
            log.extend(r["kinesis"]["sequenceNumber"] for r in records)

    return behaviour


def test_parallelization_keeps_order_per_partition_key(make_runner: RunnerFactory, stream: Stream) -> None:
    """With factor 4, batches of different keys run concurrently, one key never twice at once, each key in order."""
    seqs = stream.put_many(80, keys=16)
    active: dict[str, int] = defaultdict(int)
    lock, overlap, log = threading.Lock(), threading.Event(), list[str]()
    tracking = RecordingFunction(_tracking(active, lock, overlap, log))
    make_runner(tracking, settings={"parallelization_factor": 4, "batch_size": 5})
    wait_until(lambda: len(log) == 80, "eighty records processed")
    assert overlap.is_set()
    key_of = {seq: f"key-{i % 16}" for i, seq in enumerate(seqs)}
    for key in set(key_of.values()):
        assert [s for s in log if key_of[s] == key] == [s for s in seqs if key_of[s] == key]


def test_one_batch_in_flight_per_shard_in_order(make_runner: RunnerFactory, stream: Stream) -> None:
    """With factor 1, invocations never overlap and the shard's records arrive in sequence order."""
    seqs = stream.put_many(30, keys=5)
    active: dict[str, int] = defaultdict(int)
    lock, overlap, log = threading.Lock(), threading.Event(), list[str]()
    make_runner(RecordingFunction(_tracking(active, lock, overlap, log)), settings={"batch_size": 3})
    wait_until(lambda: len(log) == 30, "thirty records processed")
    assert not overlap.is_set()
    assert log == seqs


def test_stop_finishes_the_invocation_in_flight(make_runner: RunnerFactory, stream: Stream) -> None:
    """stop() waits for the running batch to return, counts it, then leaves no runner thread alive."""
    entered, release = threading.Event(), threading.Event()

    def slow(records: list[dict[str, Any]], _: int) -> None:
        entered.set()
        release.wait(5)

    stream.put_many(4)
    h = make_runner(RecordingFunction(slow))
    assert entered.wait(10)
    stopper = threading.Thread(target=h.stop, args=(10.0,))
    stopper.start()
    wait_until(lambda: h.runner.stopping, "stop() to begin")
    # Proving that stop() keeps waiting takes a window: join returns at once if stop() wrongly returned.
    stopper.join(STOP_WAITS_WINDOW_S)
    assert stopper.is_alive()  # still waiting for the invocation, which cannot return before `release`
    release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert h.runner.stats.records_succeeded == 4
    assert not [t for t in threading.enumerate() if t.name.startswith("esm-")]


def test_stop_gives_up_on_a_stuck_function_after_the_timeout(make_runner: RunnerFactory, stream: Stream) -> None:
    """A function stuck past stop()'s timeout is reported and its records stay unfinished, not counted done."""
    entered, release = threading.Event(), threading.Event()
    stream.put_many(3)

    def stuck(records: list[dict[str, Any]], _: int) -> None:
        entered.set()
        release.wait(10)

    h = make_runner(RecordingFunction(stuck))
    assert entered.wait(10)
    h.stop(0.2)
    assert h.log.events("esm_threads_still_running")
    stats = h.runner.stats
    assert (stats.records_read, stats.records_succeeded, stats.records_unfinished_at_stop) == (3, 0, 3)
    release.set()


def test_every_record_read_is_accounted_for_at_stop(make_runner: RunnerFactory, stream: Stream) -> None:
    """read = succeeded + sent to on-failure + unfinished, with a poison record and a stop mid-retry."""
    stream.put_many(6, prefix="ok")
    stream.put(("k", b"poison"))
    stream.put_many(3, prefix="late")

    def poison(records: list[dict[str, Any]], _: int) -> None:
        if any(base64.b64decode(r["kinesis"]["data"]) == b"poison" for r in records):
            raise ValueError("poison")

    h = make_runner(
        RecordingFunction(poison),
        settings={"batch_size": 3, "maximum_retry_attempts": -1},
        retry_backoff_base_s=0.05,
        retry_backoff_cap_s=0.05,
    )
    wait_until(lambda: h.runner.stats.function_errors >= 2, "retries of the poison batch")
    h.stop(5)
    s = h.runner.stats
    assert s.records_read == 10
    assert s.records_succeeded == 6 and s.records_sent_to_on_failure == 0
    assert s.records_read == s.records_succeeded + s.records_sent_to_on_failure + s.records_unfinished_at_stop


def test_a_resumed_runner_continues_after_the_checkpoint(make_runner: RunnerFactory, stream: Stream) -> None:
    """checkpoints from a stopped runner, passed as resume_from, make the next runner skip what was done."""
    first = stream.put_many(5, prefix="one")
    h1 = make_runner()
    wait_until(lambda: h1.function.delivered() == 5, "first deliveries")
    h1.stop()
    assert h1.runner.checkpoints == {"shardId-000000000000": first[-1]}
    second = stream.put_many(3, prefix="two")
    h2 = make_runner(resume_from=h1.runner.checkpoints)
    wait_until(lambda: h2.function.delivered() == 3, "second deliveries")
    assert [s for b in h2.function.batches for s in b] == second


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 10_001),
        ("parallelization_factor", 11),
        ("maximum_batching_window_seconds", 301),
        ("maximum_retry_attempts", -2),
        ("maximum_record_age_seconds", 59),
    ],
)
def test_settings_outside_lambdas_ranges_are_rejected(setting: str, value: int, kinesis: Any) -> None:
    """A setting Lambda would refuse raises ValueError naming it, before anything starts."""
    settings = EventSourceMappingSettings(**{setting: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=setting):
        EventSourcePoller(kinesis=kinesis, stream_name="s", region=REGION, function=print, settings=settings, on_failure=print)
