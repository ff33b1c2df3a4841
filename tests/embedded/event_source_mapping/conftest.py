"""Fixtures for the event-source runner: moto's server on 127.0.0.1, streams, recording functions, runners."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import pytest

from embedded.event_source_mapping.poller import EventSourcePoller
from infra.settings import EventSourceMappingSettings
from tests.conftest import poll_until

REGION = "us-east-1"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:test-DDBEventProcessor"
# Generous bound for asynchronous outcomes on a loaded machine; tests never assert on durations.
WAIT_S = 15.0
# How often wait_until looks again (always against its deadline).
POLL_S = 0.005
# Fast loops for tests: the runner's production values are seconds.
FAST = {
    "idle_poll_s": 0.01,
    "retry_backoff_base_s": 0.001,
    "retry_backoff_cap_s": 0.01,
    "endpoint_backoff_base_s": 0.01,
    "endpoint_backoff_cap_s": 0.05,
}
TEST_SETTINGS = EventSourceMappingSettings(
    batch_size=100,
    maximum_batching_window_seconds=0,
    starting_position="TRIM_HORIZON",
    parallelization_factor=1,
    bisect_batch_on_function_error=False,
    maximum_retry_attempts=2,
    maximum_record_age_seconds=-1,
    report_batch_item_failures=True,
)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    poll_until(predicate, timeout, what, interval=POLL_S)


class RecordingLogger:
    """A structlog-like logger that keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def bind(self, **_: Any) -> RecordingLogger:
        return self

    def _log(self, level: str, event: str, **fields: Any) -> None:
        with self._lock:
            self.entries.append((level, event, fields))

    def debug(self, event: str, **fields: Any) -> None:
        self._log("debug", event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log("error", event, **fields)

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [fields for _, event, fields in self.entries if event == name]


Behaviour = Callable[[list[dict[str, Any]], int], Any]


@dataclass
class RecordingFunction:
    """A handler(event, context) that records every invocation; `behaviour(records, call_index)` decides
    the response (return it) or the error (raise)."""

    behaviour: Behaviour | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self.lock:
            index = len(self.events)
            self.events.append(event)
            self.contexts.append(context)
        return self.behaviour(event["Records"], index) if self.behaviour else None

    @property
    def batches(self) -> list[list[str]]:
        """Sequence numbers of each invocation, in invocation order."""
        with self.lock:
            return [[r["kinesis"]["sequenceNumber"] for r in e["Records"]] for e in self.events]

    def delivered(self) -> int:
        return sum(len(b) for b in self.batches)


@dataclass
class Stream:
    kinesis: Any
    name: str

    def put(self, *records: tuple[str, bytes]) -> list[str]:
        """Put (partition key, data) records one by one (ordered); returns their sequence numbers."""
        return [
            self.kinesis.put_record(StreamName=self.name, PartitionKey=key, Data=data)["SequenceNumber"] for key, data in records
        ]

    def put_many(self, count: int, keys: int = 1, prefix: str = "r") -> list[str]:
        return self.put(*[(f"key-{i % keys}", f"{prefix}{i}".encode()) for i in range(count)])


@pytest.fixture
def kinesis(moto_url: str) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - dummy
    )


@pytest.fixture
def stream(kinesis: Any) -> Stream:
    """A fresh one-shard stream."""
    name = f"runner-{uuid.uuid4().hex[:12]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.05, "MaxAttempts": 100})
    return Stream(kinesis, name)


@dataclass
class Harness:
    """A runner under test with what it sent to the on-failure destination and what it logged."""

    runner: EventSourcePoller
    function: RecordingFunction
    failures: list[dict[str, Any]]
    log: RecordingLogger

    def stop(self, timeout: float = 5.0) -> None:
        self.runner.stop(timeout)


RunnerFactory = Callable[..., Harness]


@pytest.fixture
def make_runner(kinesis: Any, stream: Stream) -> Iterator[RunnerFactory]:
    """Build a started runner on `stream` (or another client/stream) with fast loops; stopped at teardown."""
    made: list[Harness] = []

    def factory(
        function: RecordingFunction | None = None,
        *,
        on_failure: Callable[[dict[str, Any]], None] | None = None,
        client: Any = None,
        stream_name: str | None = None,
        start: bool = True,
        settings: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Harness:
        failures: list[dict[str, Any]] = []
        log = RecordingLogger()
        function = function or RecordingFunction()
        runner = EventSourcePoller(
            kinesis=client or kinesis,
            stream_name=stream_name or stream.name,
            region=REGION,
            function=function,
            settings=replace(TEST_SETTINGS, **(settings or {})),
            on_failure=on_failure or failures.append,
            function_arn=FUNCTION_ARN,
            logger=log,
            **(FAST | kwargs),
        )
        harness = Harness(runner, function, failures, log)
        made.append(harness)
        if start:
            runner.start()
        return harness

    yield factory
    for harness in made:
        harness.stop()
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("esm-")], "runner threads to end", 5)
