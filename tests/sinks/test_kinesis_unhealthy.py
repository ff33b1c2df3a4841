"""A stream that refuses every write during the run: records are held (never dead-lettered), the sink is
reported unhealthy in metrics and logs (rate-limited), and everything is delivered once writes pass again."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.logs import RateLimitedLog
from daemon.pipeline import SinkWorker
from daemon.telemetry import Telemetry
from sinks.base import Record
from sinks.kinesis import KinesisSink, KinesisSinkConfig
from tests.conftest import poll_until
from tests.fakes import Reply
from tests.sinks.conftest import FAST_TIMEOUTS, STREAM, TINY_RETRY, ScriptedKinesis, accept_all

DENIED = "AccessDeniedException"
RECORDS = 20
LOG_INTERVAL_S = 10.0  # on the fake clock below: only the test moves it
WAIT_S = 15.0  # generous bound for each condition polled below
FLUSH_DEADLINE_S = 5.0


@dataclass
class Gate:
    """PutRecords answers: AccessDenied until `opened`, then accept everything; counts the denials."""

    opened: threading.Event = field(default_factory=threading.Event)
    denied: int = 0
    denied_entries: int = 0

    def __call__(self, body: dict[str, Any]) -> Reply | dict[str, Any]:
        if self.opened.is_set():
            return accept_all(body)
        self.denied += 1
        self.denied_entries += len(body["Records"])
        return Reply.error(DENIED, 400, f"User: producer is not authorized to perform: kinesis:PutRecords on {STREAM}")


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def wait_until(condition: Callable[[], bool], what: str) -> None:
    poll_until(condition, WAIT_S, what, interval=0.01)


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    """Every structlog line emitted while the test runs (Telemetry must be built inside)."""
    with structlog.testing.capture_logs() as logs:
        yield logs


def lines(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in list(logs) if entry["event"] == event]


def test_access_denied_during_the_run_holds_records_until_writes_pass_again(
    tmp_path: Path,
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_records: Callable[..., list[Record]],
    captured: list[dict[str, Any]],
) -> None:
    """AccessDenied for every request: nothing dead-lettered (even with max_attempts 2), sink_healthy 0 with the
    reason, one put_failed line per interval carrying the suppressed count; then all records delivered once,
    sink_healthy 1, and each transition logged once."""
    gate = Gate()
    fake = kinesis_fake(*[gate] * 100_000)
    clock = Clock()
    telemetry = Telemetry("kinesis")
    telemetry.sink_log_limiter = RateLimitedLog(LOG_INTERVAL_S, clock=clock)
    config = KinesisSinkConfig.model_validate(
        {"stream": STREAM, "endpoint_url": fake.server.endpoint_url, "retry": TINY_RETRY | {"max_attempts": 2}} | FAST_TIMEOUTS
    )
    sink = KinesisSink(config, telemetry, rng=random.Random(3))
    dead_letter_path = tmp_path / "dead.jsonl"
    dead_letters = DeadLetterFile(dead_letter_path, "kinesis")
    buffer = RecordBuffer(1000, 1 << 24)
    records = make_records(RECORDS)
    for record in records:
        assert buffer.put(sink.prepare(record), threading.Event())
    worker = SinkWorker(sink, buffer, telemetry, dead_letters)

    def sample(name: str, **labels: str) -> float | None:
        return telemetry.registry.get_sample_value(name, {"sink": "kinesis", **labels})

    assert sample("tweet_producer_sink_healthy") == 1
    worker.start()
    try:
        # The worker handles one answer at a time: once a seventh denial is counted, the first six have been
        # through the log limiter too (the fake's own count runs ahead of the worker's).
        wait_until(
            lambda: (sample("tweet_producer_put_entry_errors_total", code=DENIED) or 0) >= 7 * RECORDS,
            "seven denied requests handled by the worker",
        )
        assert sample("tweet_producer_sink_healthy") == 0
        assert sample("tweet_producer_sink_unhealthy_reason", reason=DENIED) == 1
        assert dead_letter_path.read_text() == ""
        assert telemetry.ledger.totals()["dead_lettered"] == 0
        assert len(lines(captured, "put_failed")) == 1  # the other denials were counted, not logged

        clock.now += LOG_INTERVAL_S + 1
        wait_until(lambda: len(lines(captured, "put_failed")) == 2, "the next put_failed line after the interval")
        assert lines(captured, "put_failed")[1]["suppressed_since_last"] >= 5

        gate.opened.set()
        wait_until(lambda: telemetry.ledger.totals()["sent"] == RECORDS, "every record sent")
    finally:
        worker.finish(FLUSH_DEADLINE_S)
        dead_letters.close()
        sink.close()

    assert dead_letter_path.read_text() == ""
    delivered = [data for request in fake.requests()[gate.denied:] for data, _key in request]
    assert sorted(delivered) == sorted(r.data for r in records)  # each record once, after the denials
    assert sample("tweet_producer_sink_healthy") == 1
    assert sample("tweet_producer_sink_unhealthy_reason", reason=DENIED) is None
    assert sample("tweet_producer_put_requests_total", result="permanent") == gate.denied
    assert sample("tweet_producer_put_requests_total", result="success") == len(fake.requests()) - gate.denied
    assert sample("tweet_producer_put_entry_errors_total", code=DENIED) == gate.denied_entries
    [unhealthy] = lines(captured, "sink_unhealthy")
    assert unhealthy["reason"] == DENIED and repr(STREAM) in unhealthy["detail"] and "held" in unhealthy["detail"]
    [healthy] = lines(captured, "sink_healthy")
    assert healthy["after"] == DENIED and healthy["unhealthy_s"] >= 0
