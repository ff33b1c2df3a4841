"""The runner against a scripted Kinesis endpoint (tests/fakes.py): expired iterators, endpoint errors and
resharding, which moto's Kinesis never produces."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.conftest import free_port
from tests.embedded.event_source_mapping.conftest import FAST, RecordingFunction, RunnerFactory, wait_until
from tests.fakes import FakeAwsServer, Reply

pytestmark = pytest.mark.slow

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/fake"
# How long the parent's batch is held to give a wrongly early child read the chance to show (20 idle polls).
CHILD_RACE_WINDOW_S = 0.2
FAST_IDLE_POLL_S = FAST["idle_poll_s"]
SEQUENCE_BASE = 49_600_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000  # realistic 56-digit numbers


@dataclass
class FakeShard:
    shard_id: str
    parent: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    def description(self) -> dict[str, Any]:
        seq_range: dict[str, str] = {"StartingSequenceNumber": "0"}
        if self.closed:
            seq_range["EndingSequenceNumber"] = self.records[-1]["SequenceNumber"] if self.records else "0"
        described = {"ShardId": self.shard_id, "SequenceNumberRange": seq_range, "HashKeyRange": {}}
        return described | ({"ParentShardId": self.parent} if self.parent else {})


@dataclass
class FakeKinesis:
    """Just enough of Kinesis for the runner: shards of records, iterators as positions, scripted faults."""

    shards: dict[str, FakeShard] = field(default_factory=dict)
    faults: deque[Reply] = field(default_factory=deque)  # answers to the next GetRecords calls
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def add_shard(self, shard_id: str, parent: str | None = None) -> FakeShard:
        with self.lock:
            shard = self.shards[shard_id] = FakeShard(shard_id, parent)
            return shard

    def put(self, shard_id: str, key: str, data: bytes) -> str:
        with self.lock:
            self.counter += 1
            seq = str(SEQUENCE_BASE + self.counter)
            self.shards[shard_id].records.append(
                {
                    "SequenceNumber": seq,
                    "PartitionKey": key,
                    "Data": base64.b64encode(data).decode(),
                    "ApproximateArrivalTimestamp": time.time(),
                }
            )
            return seq

    def __call__(self, operation: str, body: dict[str, Any]) -> Reply | dict[str, Any]:
        with self.lock:
            if operation == "DescribeStreamSummary":
                return {"StreamDescriptionSummary": {"StreamName": "fake", "StreamARN": STREAM_ARN, "StreamStatus": "ACTIVE"}}
            if operation == "ListShards":
                return {"Shards": [s.description() for s in self.shards.values()]}
            if operation == "GetShardIterator":
                shard = self.shards[body["ShardId"]]
                kind = body["ShardIteratorType"]
                if kind == "TRIM_HORIZON":
                    position = 0
                elif kind == "LATEST":
                    position = len(shard.records)
                else:
                    seqs = [r["SequenceNumber"] for r in shard.records]
                    position = seqs.index(body["StartingSequenceNumber"]) + (kind == "AFTER_SEQUENCE_NUMBER")
                return {"ShardIterator": f"{shard.shard_id}|{position}"}
            if operation == "GetRecords":
                if self.faults:
                    return self.faults.popleft()
                shard_id, position = body["ShardIterator"].split("|")
                shard = self.shards[shard_id]
                records = shard.records[int(position) :]
                end = int(position) + len(records)
                following = None if shard.closed and end == len(shard.records) else f"{shard_id}|{end}"
                return {"Records": records, "NextShardIterator": following, "MillisBehindLatest": 0}
            return Reply.error("UnknownOperationException")


@pytest.fixture
def fake() -> Any:
    """A started fake Kinesis endpoint with one shard, and its model."""
    model = FakeKinesis()
    model.add_shard("shardId-000000000000")
    server = FakeAwsServer(model).start()
    yield server, model
    server.stop()


def _client(server: FakeAwsServer) -> Any:
    """A client that makes one attempt per call, so every scripted fault reaches the runner."""
    return server.client("kinesis", retries={"total_max_attempts": 1, "mode": "standard"})


def _flat(function: RecordingFunction) -> list[str]:
    return [seq for batch in function.batches for seq in batch]


def test_expired_iterator_is_refreshed_after_the_last_record_read(fake: Any, make_runner: RunnerFactory) -> None:
    """ExpiredIteratorException: a new iterator AFTER_SEQUENCE_NUMBER of the last record read; nothing twice."""
    server, model = fake
    first = [model.put("shardId-000000000000", "k", f"a{i}".encode()) for i in range(3)]
    h = make_runner(client=_client(server), stream_name="fake")
    wait_until(lambda: h.function.delivered() == 3, "first records")
    model.faults.append(Reply.error("ExpiredIteratorException", message="Iterator expired"))
    wait_until(lambda: h.runner.stats.iterator_refreshes == 1, "iterator refresh")
    later = [model.put("shardId-000000000000", "k", f"b{i}".encode()) for i in range(2)]
    wait_until(lambda: h.function.delivered() == 5, "later records")
    assert _flat(h.function) == first + later
    refresh = server.operations("GetShardIterator")[-1]
    assert (refresh["ShardIteratorType"], refresh["StartingSequenceNumber"]) == ("AFTER_SEQUENCE_NUMBER", first[-1])


def test_endpoint_errors_are_retried_logged_and_counted(fake: Any, make_runner: RunnerFactory) -> None:
    """A dropped connection, a 500 and throttling are survived with backoff; the records still arrive."""
    server, model = fake
    model.faults.extend(
        [
            Reply(drop_connection=True),
            Reply.error("InternalFailure", status=500),
            Reply.error("ProvisionedThroughputExceededException"),
        ]
    )
    seqs = [model.put("shardId-000000000000", "k", b"x") for _ in range(2)]
    h = make_runner(client=_client(server), stream_name="fake")
    wait_until(lambda: h.function.delivered() == 2, "records after errors")
    assert _flat(h.function) == seqs
    assert h.runner.stats.endpoint_errors == 3
    assert len(h.log.events("esm_endpoint_unreachable")) == 1
    failed = [e["error"].split(":")[0] for e in h.log.events("esm_get_records_failed")]
    assert failed == ["ClientError", "ProvisionedThroughputExceededException"]


def test_child_shards_are_read_after_their_closed_parent(fake: Any, make_runner: RunnerFactory) -> None:
    """A closed parent found at start is read to its end before its child, so one key stays in order."""
    server, model = fake
    parent = model.shards["shardId-000000000000"]
    old = [model.put(parent.shard_id, "k", f"p{i}".encode()) for i in range(3)]
    parent.closed = True
    model.add_shard("shardId-000000000001", parent=parent.shard_id)
    new = [model.put("shardId-000000000001", "k", f"c{i}".encode()) for i in range(2)]

    child_id = "shardId-000000000001"
    overtaken: list[bool] = []

    def child_iterator_requested() -> bool:
        return any(body["ShardId"] == child_id for body in server.operations("GetShardIterator"))

    def holding_parent(records: list[dict[str, Any]], _: int) -> None:
        if records[0]["eventID"].startswith(parent.shard_id):
            # Hold the parent's batch while the child's reader is running: it must not ask for the child's
            # records yet. Proving an absence takes a window; it opens only once the child's reader exists,
            # ends early if the defect shows, and lasts CHILD_RACE_WINDOW_S (many idle polls) otherwise.
            wait_until(lambda: any(t.name == f"esm-{child_id}-reader" for t in threading.enumerate()), "the child's reader")
            window_ends = time.monotonic() + CHILD_RACE_WINDOW_S
            while not child_iterator_requested() and time.monotonic() < window_ends:
                time.sleep(FAST_IDLE_POLL_S)
            overtaken.append(child_iterator_requested())

    h = make_runner(RecordingFunction(holding_parent), client=_client(server), stream_name="fake")
    wait_until(lambda: h.function.delivered() == 5, "all records")
    assert overtaken and not any(overtaken), "the child shard was read while its parent still had records in flight"
    assert _flat(h.function) == old + new
    assert h.runner.stats.shards_finished == 1


def test_a_shard_closing_while_running_hands_over_to_its_children(fake: Any, make_runner: RunnerFactory) -> None:
    """When the shard being read closes (a reshard), its children are discovered and read from their start."""
    server, model = fake
    parent = model.shards["shardId-000000000000"]
    old = [model.put(parent.shard_id, "k", b"before")]
    h = make_runner(client=_client(server), stream_name="fake", settings={"starting_position": "LATEST"})
    wait_until(lambda: len(server.operations("GetRecords")) >= 2, "polling")
    later = [model.put(parent.shard_id, "k", b"after")]
    with model.lock:
        model.shards["shardId-000000000001"] = FakeShard("shardId-000000000001", parent=parent.shard_id)
        parent.closed = True
    child = [model.put("shardId-000000000001", "k", b"child")]
    wait_until(lambda: h.function.delivered() == 2, "parent and child records")
    assert _flat(h.function) == later + child
    assert old[0] not in _flat(h.function)
    assert (h.runner.stats.shards_started, h.runner.stats.shards_finished) == (2, 1)


def test_connection_refused_while_the_endpoint_restarts_is_survived(make_runner: RunnerFactory) -> None:
    """The embedded endpoint going away (connection refused) and coming back on its port: polling resumes."""
    from embedded.endpoint import EmbeddedEndpoint

    endpoint = EmbeddedEndpoint("127.0.0.1", free_port())
    endpoint.start()
    try:
        client = boto3.client(
            "kinesis",
            endpoint_url=endpoint.url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",  # noqa: S106 - dummy
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )
        name = f"restart-{uuid.uuid4().hex[:8]}"
        client.create_stream(StreamName=name, ShardCount=1)
        client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.05, "MaxAttempts": 100})
        h = make_runner(client=client, stream_name=name)
        endpoint.stop()  # moto's state lives in this process: the stream survives the restart
        wait_until(lambda: len(h.log.events("esm_endpoint_unreachable")) >= 2, "refused connections")
        endpoint.start()
        seqs = [client.put_record(StreamName=name, PartitionKey="k", Data=b"x")["SequenceNumber"] for _ in range(2)]
        wait_until(lambda: h.function.delivered() == 2, "records after the restart")
        assert _flat(h.function) == seqs
        # The first error may be the request cut by the shutdown; the next ones are refused connections.
        assert any("Could not connect" in e["error"] for e in h.log.events("esm_endpoint_unreachable"))
    finally:
        endpoint.stop()
