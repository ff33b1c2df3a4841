"""Delivery under failure, outcome checked where records land: 100k records at 30 % per-record failures end in
the stream exactly once; whole-call 500s, slow answers and resets over HTTP lose nothing and duplicate only
where an answer was lost (and those are counted)."""

from __future__ import annotations

import base64
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sinks.base import Record
from sinks.kinesis import KinesisSink
from sinks.kinesis.queues import WireItem
from tests.fakes import Reply
from tests.sinks.conftest import FakeTransport, RecordingEvents, ScriptedKinesis, accept_all, deliver, shards_of

RECORDS = 100_000
FAILURE_RATE = 0.3
PTEE = "ProvisionedThroughputExceededException"
DELIVERY_DEADLINE_S = 120.0  # far above the run's few seconds; only reached if delivery is broken


def test_100k_records_at_30_percent_entry_failures_reach_the_stream_exactly_once(
    engine_sink: Callable[..., KinesisSink], events: RecordingEvents
) -> None:
    """4 shards, 30 % of entries refused (throttling or internal failure) on every attempt at random: every
    record is stored exactly once, no record is dead-lettered or unsent, and the attempts histogram adds up."""
    rng = random.Random(14)
    lock = threading.Lock()

    def flaky(records: list[WireItem], _landing: list[str]) -> dict[int, str]:
        with lock:
            return {i: PTEE if rng.random() < 0.5 else "InternalFailure"
                    for i in range(len(records)) if rng.random() < FAILURE_RATE}

    transport = FakeTransport(shards_of(4), step=flaky)
    sink = engine_sink(transport, linger=0.005, in_flight=4, shard_limits={"records_per_second": 10**9,
                                                                           "bytes_per_second": 10**12})
    entries = [sink.prepare(Record(b'{"n": %d}' % i, {"user_id": f"u{i % 5000}"}, "test", f"test:{i}"))
               for i in range(RECORDS)]
    result = deliver(sink, entries, DELIVERY_DEADLINE_S)
    assert len(result.sent) == RECORDS and not result.failed and not result.unsent
    stored = Counter(transport.stored_data())
    assert len(stored) == RECORDS and set(stored.values()) == {1}
    settled: Counter[int] = Counter()
    for event in events.named("records_settled"):
        settled.update(event["attempts"])
    assert sum(settled.values()) == RECORDS and max(settled) > 1


class LossyKinesis:
    """PutRecords answers at random: a 500, an answer lost after the records were stored (connection dropped,
    or an answer slower than the client's read timeout), a dropped connection before storing, or success."""

    def __init__(self, seed: int, slow_s: float) -> None:
        self.rng = random.Random(seed)
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.stored: Counter[bytes] = Counter()
        self.lost_answers: Counter[bytes] = Counter()  # records stored by a request whose answer was lost

    def __call__(self, body: dict[str, Any]) -> Reply | dict[str, Any]:
        data = [base64.b64decode(r["Data"]) for r in body["Records"]]
        with self.lock:
            roll = self.rng.random()
        if roll < 0.15:
            return Reply.error("InternalFailure", 500, "scripted 500")
        if roll < 0.25:
            return Reply(drop_connection=True)  # nothing stored
        with self.lock:
            self.stored.update(data)
            if roll < 0.4:
                self.lost_answers.update(data)
        if roll < 0.32:
            return Reply(drop_connection=True)  # stored, then the answer is lost
        if roll < 0.4:
            time.sleep(self.slow_s)  # stored; the answer comes after the client gave up
        return accept_all(body)


def test_whole_call_500s_slow_answers_and_resets_lose_nothing_and_duplicate_only_lost_answers(
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
    events: RecordingEvents,
) -> None:
    """Over HTTP through the real client: every record is stored at least once; a record stored twice was in a
    request whose answer was lost; duplicates_possible counted at least every extra copy."""
    read_timeout = 0.3
    lossy = LossyKinesis(seed=3, slow_s=read_timeout * 3)
    fake = kinesis_fake(*[lossy] * 10_000)
    sink = make_sink(fake.server.endpoint_url, read_timeout=read_timeout, linger=0, max_batch_records=20, in_flight=4)
    entries = [sink.prepare(r) for r in make_records(400)]
    result = deliver(sink, entries, DELIVERY_DEADLINE_S)
    assert len(result.sent) == 400 and not result.failed and not result.unsent
    assert set(lossy.stored) == {e.data for e in entries}
    extra = {data: count - 1 for data, count in lossy.stored.items() if count > 1}
    assert extra, "the script should have lost some answers (seeded)"
    assert all(lossy.lost_answers[data] >= count for data, count in extra.items())
    counted = sum(d["records"] for d in events.named("duplicates_possible") if d["reason"] == "answer_lost")
    assert counted >= sum(extra.values())
