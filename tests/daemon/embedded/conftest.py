"""Fixtures for the embedded stack's tests: moto's endpoint on 127.0.0.1, streams, and a runner harness."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from daemon.embedded.endpoint import EmbeddedEndpoint, embedded_client
from daemon.embedded.runner import EventSourceRunner
from infra.settings import EventSourceMappingSettings

REGION = "us-east-1"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:runner-under-test"
# How long a test waits for something the runner should do within milliseconds; generous for 2 shared cores.
WAIT_S = 5.0
# Time stop() gets at teardown; the tests that measure stop() assert far tighter bounds themselves.
TEARDOWN_STOP_S = 5.0
# Fast timings: the runner's defaults suit a daemon, not a test suite.
FAST_IDLE_POLL_S = 0.02
FAST_BACKOFF_S = (0.01,)
RUNNER_THREAD_PREFIX = "esm-"


@pytest.fixture
def endpoint() -> Iterator[EmbeddedEndpoint]:
    server = EmbeddedEndpoint("127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


@dataclass
class Stream:
    """A stream on the endpoint, with helpers to write records to it."""

    kinesis: Any
    name: str

    def put(self, *payloads: bytes, key: str = "key") -> list[str]:
        """Writes each payload with one PutRecord (so their order is the stream's order); returns sequence numbers."""
        return [
            self.kinesis.put_record(StreamName=self.name, Data=p, PartitionKey=key)["SequenceNumber"]
            for p in payloads
        ]

    def put_keyed(self, records: list[tuple[str, bytes]]) -> list[str]:
        """Writes (partition key, payload) pairs in order; returns their sequence numbers."""
        return [
            self.kinesis.put_record(StreamName=self.name, Data=data, PartitionKey=key)["SequenceNumber"]
            for key, data in records
        ]

    def shard_ids(self) -> list[str]:
        return [s["ShardId"] for s in self.kinesis.list_shards(StreamName=self.name)["Shards"]]


@pytest.fixture
def kinesis(endpoint: EmbeddedEndpoint) -> Any:
    return embedded_client("kinesis", endpoint.url, REGION)


@pytest.fixture
def make_stream(kinesis: Any) -> Callable[[int], Stream]:
    """Creates a stream with a unique name (moto's state is per process, shared by every endpoint)."""

    def make(shards: int = 1) -> Stream:
        name = f"runner-{uuid.uuid4().hex[:12]}"
        kinesis.create_stream(StreamName=name, ShardCount=shards)
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.05, "MaxAttempts": 100})
        return Stream(kinesis, name)

    return make


@pytest.fixture
def stream(make_stream: Callable[[int], Stream]) -> Stream:
    return make_stream(1)


@pytest.fixture
def settings() -> EventSourceMappingSettings:
    """The stack's mapping settings with no batching window: each test changes what it is about."""
    return replace(
        EventSourceMappingSettings(),
        batch_size=10,
        maximum_batching_window_seconds=0,
        bisect_batch_on_function_error=False,
        maximum_retry_attempts=2,
        maximum_record_age_seconds=-1,
    )


@dataclass
class Invocation:
    event: dict[str, Any]
    context: Any
    remaining_ms_at_start: int
    started: float
    ended: float = 0.0

    @property
    def sequence_numbers(self) -> list[str]:
        return [r["kinesis"]["sequenceNumber"] for r in self.event["Records"]]

    @property
    def keys(self) -> list[str]:
        return [r["kinesis"]["partitionKey"] for r in self.event["Records"]]


@dataclass
class Recorder:
    """A function for the runner: records every invocation, then does what `behaviour` says (return or raise)."""

    behaviour: Callable[[Invocation], Any] = lambda invocation: None
    invocations: list[Invocation] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        invocation = Invocation(event, context, context.get_remaining_time_in_millis(), time.monotonic())
        with self.lock:
            self.invocations.append(invocation)
        try:
            return self.behaviour(invocation)
        finally:
            invocation.ended = time.monotonic()

    def delivered(self) -> list[str]:
        """Sequence numbers of every record sent to the function, in invocation order, repeats included."""
        with self.lock:
            return [seq for invocation in self.invocations for seq in invocation.sequence_numbers]

    def batches(self) -> list[list[str]]:
        with self.lock:
            return [invocation.sequence_numbers for invocation in self.invocations]


@dataclass
class FailureSink:
    """The on-failure destination: keeps what it is sent; optionally raises after keeping it."""

    raises: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, failure: dict[str, Any]) -> None:
        self.records.append(failure)
        if self.raises:
            raise ConnectionError("destination unreachable")


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Polls `condition` until it holds; fails the test when it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.005)


def runner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(RUNNER_THREAD_PREFIX) and t.is_alive()]


@dataclass
class Harness:
    """Builds and starts runners on one stream; stops them all when the test ends."""

    stream: Stream
    default_settings: EventSourceMappingSettings
    runners: list[EventSourceRunner] = field(default_factory=list)

    def start(
        self,
        function: Callable[[dict[str, Any], Any], Any],
        on_failure: Callable[[dict[str, Any]], None] | None = None,
        settings: EventSourceMappingSettings | None = None,
        **kwargs: Any,
    ) -> EventSourceRunner:
        options: dict[str, Any] = {"idle_poll_s": FAST_IDLE_POLL_S, "retry_backoff_s": FAST_BACKOFF_S} | kwargs
        runner = EventSourceRunner(
            kinesis=self.stream.kinesis,
            stream_name=self.stream.name,
            region=REGION,
            function=function,
            settings=settings or self.default_settings,
            on_failure=on_failure or FailureSink(),
            function_arn=FUNCTION_ARN,
            **options,
        )
        self.runners.append(runner)
        runner.start()
        return runner


@pytest.fixture
def harness(stream: Stream, settings: EventSourceMappingSettings) -> Iterator[Harness]:
    h = Harness(stream, settings)
    yield h
    for runner in h.runners:
        runner.stop(TEARDOWN_STOP_S)
    assert runner_threads() == [], "a runner left threads running"
