"""Kinesis sink fixtures: dummy AWS credentials, a scripted PutRecords endpoint, records and a recording observer."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sinks.base import Deadline, Record, Sink
from sinks.batch import WriteResult
from sinks.kinesis import KinesisSink, KinesisSinkConfig
from sinks.kinesis.aggregate import Aggregate
from sinks.kinesis.queues import WireItem
from sinks.kinesis.records import KinesisEntry, hash_key_of
from sinks.kinesis.service import CallFailed, EntryFailure, PutOutcome, PutResponse
from sinks.kinesis.shards import Shard
from tests.fakes import FakeAwsServer, Reply

REGION = "us-east-1"
STREAM = "tweets-under-test"
# Backoff small enough that a retrying test finishes in milliseconds; timeouts short enough that a broken
# fake fails the test quickly instead of hanging it.
TINY_RETRY = {"initial_backoff": 0.001, "max_backoff": 0.004}
FAST_TIMEOUTS = {"connect_timeout": 2.0, "read_timeout": 5.0}
# Per-shard limits no test reaches (the scripted endpoint enforces none).
UNLIMITED_SHARDS = {"records_per_second": 1e6, "bytes_per_second": 1e10}

PutReply = Callable[[dict[str, Any]], Reply | dict[str, Any]]


@pytest.fixture(autouse=True)
def dummy_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The sink takes credentials from the AWS chain: give it dummies and hide any real profile or endpoint."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_KINESIS", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-not-a-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --- the recording observer ---------------------------------------------------------------------


@dataclass
class RecordingEvents:
    """A SinkEvents implementation that keeps every call, and signals each records_retried as it happens."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    retry_announced: threading.Event = field(default_factory=threading.Event)

    def put_requested(self, *, result: str, records: int, accepted: int, latency_s: float | None) -> None:
        self.calls.append(("put_requested", {"result": result, "records": records, "accepted": accepted,
                                             "latency_s": latency_s}))

    def put_failed(self, *, code: str, records: int, detail: str) -> None:
        self.calls.append(("put_failed", {"code": code, "records": records, "detail": detail}))

    def records_retried(self, *, records: int, attempt: int, delay_s: float, reason: str) -> None:
        self.calls.append(("records_retried", {"records": records, "attempt": attempt, "delay_s": delay_s, "reason": reason}))
        self.retry_announced.set()

    def sink_health(self, *, healthy: bool, reason: str, detail: str) -> None:
        self.calls.append(("sink_health", {"healthy": healthy, "reason": reason, "detail": detail}))

    def requests_in_flight(self, *, count: int) -> None:
        self.calls.append(("requests_in_flight", {"count": count}))

    def shard_throttled(self, *, shard_id: str, records: int) -> None:
        self.calls.append(("shard_throttled", {"shard_id": shard_id, "records": records}))

    def shard_map_refreshed(self, *, shards: int, reason: str, changed: bool) -> None:
        self.calls.append(("shard_map_refreshed", {"shards": shards, "reason": reason, "changed": changed}))

    def records_aggregated(self, *, user_records: int, kinesis_records: int) -> None:
        self.calls.append(("records_aggregated", {"user_records": user_records, "kinesis_records": kinesis_records}))

    def records_settled(self, *, attempts: Mapping[int, int]) -> None:
        self.calls.append(("records_settled", {"attempts": dict(attempts)}))

    def records_misrouted(self, *, records: int, shard_id: str, detail: str) -> None:
        self.calls.append(("records_misrouted", {"records": records, "shard_id": shard_id, "detail": detail}))

    def duplicates_possible(self, *, records: int, reason: str) -> None:
        self.calls.append(("duplicates_possible", {"records": records, "reason": reason}))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [args for event, args in self.calls if event == name]


@pytest.fixture
def events() -> RecordingEvents:
    """A fresh recording observer."""
    return RecordingEvents()


# --- records --------------------------------------------------------------------------------------


def tweet_record(text: str = "hello", *, author_id: Any = "1001", tweet_id: str = "1", origin: str = "test:1") -> Record:
    """A record shaped like an X API v2 stream line, its bytes the UTF-8 JSON of the event."""
    event = {"data": {"id": tweet_id, "text": text, "author_id": author_id}}
    return Record(json.dumps(event, ensure_ascii=False).encode("utf-8"), event, "test", origin)


@pytest.fixture
def make_records() -> Callable[..., list[Record]]:
    """Builds `n` distinct tweet records with distinct authors (so entries are told apart by key and bytes)."""

    def make(n: int, text: str = "tweet") -> list[Record]:
        return [tweet_record(f"{text} {i}", author_id=str(5000 + i), tweet_id=str(i), origin=f"test:{i}") for i in range(n)]

    return make


# --- the scripted PutRecords endpoint ---------------------------------------------------------------


def accept_all(body: dict[str, Any]) -> dict[str, Any]:
    """A PutRecords response accepting every record of the request."""
    records = [{"SequenceNumber": f"{i + 1:056d}", "ShardId": "shardId-000000000000"} for i in range(len(body["Records"]))]
    return {"FailedRecordCount": 0, "Records": records}


def fail_positions(failures: dict[int, str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A reply failing the entries at the given positions with the given ErrorCode, accepting the rest."""

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        response = accept_all(body)
        for position, code in failures.items():
            response["Records"][position] = {"ErrorCode": code, "ErrorMessage": f"{code} (scripted)"}
        response["FailedRecordCount"] = len(failures)
        return response

    return reply


ONE_SHARD_ID = "shardId-000000000000"
MAX_HASH_KEY = 2**128 - 1


def one_shard(_body: dict[str, Any]) -> dict[str, Any]:
    """A ListShards answer: one open shard over the whole hash-key range (the one accept_all names)."""
    return {"Shards": [{"ShardId": ONE_SHARD_ID, "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(MAX_HASH_KEY)},
                        "SequenceNumberRange": {"StartingSequenceNumber": "1"}}]}


def whole_call(reply: Reply) -> PutReply:
    """The same whole-call reply (an error or a dropped connection) whatever the request."""
    return lambda _body: reply


THROTTLED = Reply.error("ProvisionedThroughputExceededException", 400, "Rate exceeded for shard")
INTERNAL_500 = Reply.error("InternalFailure", 500, "internal service failure")
DROPPED = Reply(drop_connection=True)


def stream_summary(status: str = "ACTIVE", max_record_kib: int | None = None) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A DescribeStreamSummary answer for the requested stream with this status (and maximum record size)."""

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("StreamName", STREAM)
        summary: dict[str, Any] = {
            "StreamName": name,
            "StreamARN": f"arn:aws:kinesis:{REGION}:123456789012:stream/{name}",
            "StreamStatus": status,
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": 1_700_000_000,
            "EnhancedMonitoring": [],
            "OpenShardCount": 1,
        }
        if max_record_kib is not None:
            summary["MaxRecordSizeInKiB"] = max_record_kib
        return {"StreamDescriptionSummary": summary}

    return reply


@dataclass
class ScriptedKinesis:
    """A FakeAwsServer answering PutRecords calls from a script, one reply per call, then accepting all.

    DescribeStreamSummary calls are answered by `describe` (an ACTIVE stream unless a test says otherwise).
    """

    server: FakeAwsServer
    script: list[PutReply] = field(default_factory=list)
    describe: PutReply = field(default_factory=stream_summary)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, operation: str, body: dict[str, Any]) -> Reply | dict[str, Any]:
        if operation == "DescribeStreamSummary":
            return self.describe(body)
        if operation == "ListShards":
            return one_shard(body)
        if operation != "PutRecords":
            return Reply.error("UnknownOperationException", 400, operation)
        with self.lock:
            step = self.script.pop(0) if self.script else accept_all
        return step(body)

    def requests(self) -> list[list[tuple[bytes, str]]]:
        """Each PutRecords request's records as (data, partition key), in arrival order."""
        return [
            [(base64.b64decode(r["Data"]), r["PartitionKey"]) for r in body["Records"]]
            for body in self.server.operations("PutRecords")
        ]


@pytest.fixture(scope="package")
def _kinesis_server() -> Iterator[ScriptedKinesis]:
    # One server for the folder: stopping a ThreadingHTTPServer waits out its 0.5 s poll interval.
    scripted = ScriptedKinesis(FakeAwsServer(lambda operation, body: scripted.handle(operation, body)))
    scripted.server.start()
    yield scripted
    scripted.server.stop()


@pytest.fixture
def kinesis_fake(_kinesis_server: ScriptedKinesis) -> Callable[..., ScriptedKinesis]:
    """Scripts the fake Kinesis endpoint: `kinesis_fake(reply, reply, ...)`, one reply per PutRecords call."""

    def start(*script: PutReply, describe: PutReply | None = None) -> ScriptedKinesis:
        with _kinesis_server.lock:
            _kinesis_server.script[:] = script
            _kinesis_server.describe = describe or stream_summary()
        _kinesis_server.server.calls.clear()
        return _kinesis_server

    return start


@pytest.fixture
def make_sink(events: RecordingEvents) -> Iterator[Callable[..., KinesisSink]]:
    """Builds a KinesisSink for an endpoint with tiny backoff and a seeded RNG; closed after the test.

    The scripted endpoint has no per-shard limit, and its tests reason in whole requests: the sink's shard
    limits are raised far above what a test sends unless the test sets them.
    """
    sinks: list[KinesisSink] = []

    def make(endpoint_url: str | None = None, seed: int = 7, **overrides: Any) -> KinesisSink:
        retry = TINY_RETRY | overrides.pop("retry", {})
        fields = {"stream": STREAM, "endpoint_url": endpoint_url, "retry": retry, "shard_limits": UNLIMITED_SHARDS}
        fields = fields | FAST_TIMEOUTS | overrides
        sink = KinesisSink(KinesisSinkConfig.model_validate(fields), events, rng=random.Random(seed))
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def assert_accounted(batch: list[KinesisEntry], result: WriteResult[KinesisEntry]) -> None:
    """Every entry handed to write is in exactly one of sent / failed / unsent (by identity)."""
    placed = [id(e) for e in result.sent] + [id(e) for e, _, _ in result.failed] + [id(e) for e in result.unsent]
    assert sorted(placed) == sorted(id(e) for e in batch)


# --- the v2 contract: start, submit, finish, with every completion checked exactly once ---------------


class Completions:
    """A Completion that fills a WriteResult and fails the test if an entry is reported twice."""

    def __init__(self) -> None:
        self.result: WriteResult[KinesisEntry] = WriteResult()
        self.details: list[str] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self._seen: set[int] = set()

    def _mark(self, entries: list[KinesisEntry]) -> None:
        for entry in entries:
            assert id(entry) not in self._seen, f"{entry.record.origin} reported twice"
            self._seen.add(id(entry))
        self.changed.notify_all()

    def sent(self, entries: Sequence[KinesisEntry]) -> None:
        with self.lock:
            self._mark(list(entries))
            self.result.sent.extend(entries)

    def failed(self, items: Sequence[tuple[KinesisEntry, str, str]]) -> None:
        with self.lock:
            self._mark([entry for entry, _, _ in items])
            self.result.failed.extend(items)

    def unsent(self, entries: Sequence[KinesisEntry], detail: str) -> None:
        with self.lock:
            self._mark(list(entries))
            self.result.unsent.extend(entries)
            self.details.append(detail)

    def reported(self) -> int:
        with self.lock:
            return len(self._seen)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Block until `condition()` (evaluated under the lock at each completion) holds, or fail the test."""
        with self.changed:
            assert self.changed.wait_for(condition, timeout_s), f"timed out waiting for {what}"


def deliver(
    sink: Sink[KinesisEntry], entries: list[KinesisEntry], deadline: Deadline | float | None = None
) -> WriteResult[KinesisEntry]:
    """start, submit everything, finish: every entry reported exactly once (asserted); the result by outcome.

    `deadline`: a Deadline, or seconds from now, or None (no deadline).
    """
    if not isinstance(deadline, Deadline):
        deadline = Deadline(None if deadline is None else time.monotonic() + deadline)
    completions = Completions()
    sink.start(completions)
    taken = sink.submit(entries, deadline)
    sink.finish(deadline)
    result = completions.result
    result.unsent.extend(entries[taken:])
    assert_accounted(entries, result)
    return result


# --- an in-process transport with several shards --------------------------------------------------------


def shards_of(count: int) -> list[Shard]:
    """`count` open shards splitting the hash-key range evenly, as CreateStream does."""
    step = (MAX_HASH_KEY + 1) // count
    return [Shard(f"shardId-{i:012d}", i * step, MAX_HASH_KEY if i == count - 1 else (i + 1) * step - 1) for i in range(count)]


def wire_hash_key(record: WireItem) -> int:
    """Where Kinesis routes a wire record: its explicit hash key, else MD5 of its partition key."""
    return int(record.explicit_hash_key) if record.explicit_hash_key is not None else hash_key_of(record.partition_key)


# A script step: given the request's records and the shard each would land on, return a whole-call outcome,
# or a dict position -> ErrorCode of the entries to refuse (the rest are accepted), or None to accept all.
Step = Callable[[list[WireItem], list[str]], "CallFailed | dict[int, str] | None"]


@dataclass
class FakeTransport:
    """PutRecords in process: routes by hash key over `shards` (what the stream really has; `listed` is what
    ListShards says), stores accepted records per shard in arrival order, answers from `step`."""

    shards: list[Shard]
    step: Step = lambda _records, _landing: None  # the default accepts everything
    listed: list[Shard] | None = None
    stored: dict[str, list[WireItem]] = field(default_factory=dict)
    calls: list[list[WireItem]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sequence: int = 0

    def list_shards(self) -> list[Shard]:
        with self.lock:
            return list(self.listed if self.listed is not None else self.shards)

    def landing(self, record: WireItem) -> str:
        key = wire_hash_key(record)
        return next(s.shard_id for s in self.shards if s.start <= key <= s.end)

    def put_records(self, stream: str, records: Sequence[WireItem]) -> PutOutcome:
        batch = list(records)
        with self.lock:
            self.calls.append(batch)
            landing = [self.landing(r) for r in batch]
        answer = self.step(batch, landing)
        if isinstance(answer, CallFailed):
            return answer
        refused = answer or {}
        failures: list[EntryFailure] = []
        shard_ids: list[str | None] = []
        sequences: list[str | None] = []
        with self.lock:
            for position, (record, shard_id) in enumerate(zip(batch, landing, strict=True)):
                if position in refused:
                    failures.append(EntryFailure(position, refused[position], "scripted"))
                    shard_ids.append(None)
                    sequences.append(None)
                    continue
                self.sequence += 1
                self.stored.setdefault(shard_id, []).append(record)
                shard_ids.append(shard_id)
                sequences.append(f"{self.sequence:056d}")
        return PutResponse(tuple(failures), 0.001, tuple(shard_ids), tuple(sequences))

    def stored_data(self) -> list[bytes]:
        """Every accepted user record's bytes (aggregates' members included), over all shards."""
        with self.lock:
            return [m.data for items in self.stored.values() for item in items for m in _members(item)]


def _members(item: WireItem) -> list[KinesisEntry]:
    return item.members if isinstance(item, Aggregate) else [item]


@pytest.fixture
def engine_sink(events: RecordingEvents) -> Iterator[Callable[..., KinesisSink]]:
    """Builds a KinesisSink over a FakeTransport (no HTTP): engine_sink(transport, **config)."""
    sinks: list[KinesisSink] = []

    def make(transport: FakeTransport, seed: int = 7, **overrides: Any) -> KinesisSink:
        retry = TINY_RETRY | overrides.pop("retry", {})
        fields = {"stream": STREAM, "endpoint_url": "http://127.0.0.1:9", "retry": retry} | FAST_TIMEOUTS | overrides
        sink = KinesisSink(KinesisSinkConfig.model_validate(fields), events, rng=random.Random(seed),
                           transport=transport, lister=transport.list_shards)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()
