"""FakeKinesis: a real HTTP/1.1 multi-shard Kinesis endpoint on 127.0.0.1 with seeded fault injection.

It speaks Kinesis's JSON 1.1 protocol (``X-Amz-Target: Kinesis_20131202.<Op>``, JSON bodies, answers as
``application/x-amz-json-1.1``, errors as ``{"__type": code, "message": ...}`` with AWS's HTTP status: 400
for ProvisionedThroughputExceededException / ResourceNotFoundException / ValidationException, 500
InternalFailure, 503 ServiceUnavailable), over keep-alive connections with Nagle off, so boto3
(``endpoint_url=fake.url``, any keys, region us-east-1) and a hand-made client both work. Operations:
DescribeStreamSummary, ListShards (MaxResults/NextToken pages, ShardFilter, and Kinesis's rule that NextToken
goes alone: with StreamName it is an InvalidArgumentException - boto3's list_shards paginator breaks it),
PutRecords, PutRecord. Signatures are checked only when ``credentials={key_id: secret}`` is given.

Usage::

    with FakeKinesis(4, seed=1) as fake:                 # listening once constructed; closed on exit
        client = fake.client()                          # boto3, exactly one attempt per call
        fake.set_faults(entry_failure_rate=0.3)         # 30 % of entries refused in 200 partial answers
        fake.limit_shards(records_per_s=1000, bytes_per_s=1 << 20)   # rolling 1 s window per shard
        fake.script(CallError(500, "InternalFailure"), ResetAfter())  # the next two PutRecords calls
        low, high = fake.split("shardId-000000000000")
        ...                                             # run the sink against fake.url
        assert fake.wait_for_user_records(len(expected), timeout_s=30)
        assert fake.data_counts() == Counter(expected)  # exactly once, aggregates opened
        assert fake.misrouted_user_records() == []

Model: one stream (``stream``, default ``DEFAULT_STREAM``; ``stream_mode`` PROVISIONED or ON_DEMAND) of
``shards`` shards with even hash-key ranges over [0, 2^128-1], ids ``shardId-000000000000``...; sequence
numbers are 56-digit decimal strings increasing per shard. Routing: ExplicitHashKey (decimal) when given,
else MD5(partition key, UTF-8) as a big-endian integer, to the open shard whose range holds it
(``shard_of(hash_key)``). A put call is validated first, whatever the faults: a bad request is a 400
ValidationException naming the first bad ``records.<n>.member.<field>`` (1-based like AWS; PartitionKey 1-256
characters, data + key <= ``max_record_bytes``, ExplicitHashKey ``0|[1-9]\\d{0,38}`` <= 2^128-1, 1-500
records; over ``max_request_bytes`` in all is an InvalidArgumentException). Then each entry in order: a
scripted or injected entry failure, else the shard's rate limit, else stored. ``records()`` holds every
accepted Kinesis record (``StoredRecord``: data, partition key, explicit hash key, hash key, shard, sequence
number, arrival order, ``stored_at`` on ``clock``); ``user_records()`` opens KPL aggregates with
aws_kinesis_agg's deaggregator (``UserRecord``, each with the shard its Kinesis record landed in; a record
with the magic but a bad MD5 stays whole);
``misrouted_user_records()`` are members whose own hash (their explicit hash key if they have one, else MD5
of their key) lies outside that shard's range; ``data_counts()`` is a Counter of user data bytes.
``keys_in_shard(shard_id, n)`` gives partition keys that route to a shard; ``stream_status`` (ACTIVE) is
what DescribeStreamSummary reports; ``ManualClock`` is a clock a test moves by hand (``clock=``).

Faults (seeded by ``seed``, thread-safe, changeable while requests run; random ones apply to put calls):

- ``set_faults(**fields)`` (the ``Faults`` in ``fake.faults``): per call, in this order,
  ``reset_before_rate`` (the request is read, then the connection reset by a TCP RST: nothing stored),
  ``call_failure_rate`` (answers ``call_failure_status`` + ``call_failure_code``, nothing stored), then per
  entry ``entry_failure_rate`` (``entry_failure_code``, ProvisionedThroughputExceededException by default,
  in a 200 answer with FailedRecordCount), then ``reset_after_rate`` (stored, then reset without an answer:
  the lost answer that makes a resend a duplicate) and ``slow_rate`` (stored, the answer held back
  ``slow_delay_s``: a client whose read timeout is shorter has lost the answer too).
- ``script(*steps, operation="PutRecords")``: the next calls of that operation (any operation) take these
  steps, one per call as they arrive, instead of the random faults: ``Normal``, ``CallError(status, code)``,
  ``EntryErrors({0-based position: code})``, ``ResetOnArrival`` (reset before the body is read: a large send
  fails), ``ResetBefore``, ``ResetAfter``, ``Slow(delay_s, then=...)``,
  or a callable ``(request body) -> dict | tests.fakes.Reply`` answered verbatim with nothing stored (like
  tests/sinks/conftest.py's ScriptedKinesis). ``pending_steps()`` says how many are left.
- ``limit_shards(records_per_s, bytes_per_s)``: per shard, entries beyond either limit within the last
  ``RATE_WINDOW_S`` (on ``clock``, injectable) are refused with ProvisionedThroughputExceededException;
  bytes count data + partition key, as Kinesis does. ``limit_shards()`` lifts the limits.
- ``split(shard_id[, new_starting_hash_key])`` / ``merge(shard_id, adjacent_shard_id)``: resharding at once;
  the parent gets an EndingSequenceNumber, children ParentShardId (and AdjacentParentShardId), writes route
  by the new open shards. ``reject_closed_for_s`` (default 0: off): for that long after a reshard, a put
  call with an entry in a closed shard's range answers 400 ResourceNotFoundException.

Counters: ``stats()`` is a ``FakeStats`` snapshot: calls per operation, entries per PutRecords call,
connections accepted, entries throttled by the rate limit per shard, injected faults by kind, refused
entries by code, records accepted per shard, refused signatures, and ``internal_errors`` (defects of the
fake itself, answered as 500s: assert it stays empty). Waiting: ``wait_until(predicate, timeout_s)`` and
``wait_for_user_records(count, timeout_s)`` re-check after every handled put call. ``reset()`` restores the
state after construction (records, counters, faults, limits, scripts, shards).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

from tests.fake_kinesis_http import serve
from tests.fake_kinesis_requests import deaggregate, list_shards, parse_entry, parse_put_records, verbatim
from tests.fake_kinesis_shards import ShardSet
from tests.fake_kinesis_sigv4 import check_signature
from tests.fake_kinesis_types import (
    ACCOUNT_ID,
    DEFAULT_STREAM,
    INTERNAL_FAILURE,
    KPL_MAGIC,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    PUT_OPERATIONS,
    RATE_WINDOW_S,
    REGION,
    TARGET_PREFIX,
    THROTTLED,
    Answer,
    CallError,
    EntryErrors,
    FakeStats,
    Faults,
    KinesisError,
    ManualClock,
    Normal,
    Plan,
    RawRequest,
    ResetAfter,
    ResetBefore,
    ResetOnArrival,
    ShardInfo,
    Slow,
    Step,
    StoredRecord,
    UserRecord,
    WireEntry,
    hash_key_of,
    plan_for,
)

__all__ = [
    "DEFAULT_STREAM", "INTERNAL_FAILURE", "KPL_MAGIC", "RATE_WINDOW_S", "REGION", "THROTTLED",
    "CallError", "EntryErrors", "FakeKinesis", "FakeStats", "Faults", "KinesisError", "ManualClock", "Normal",
    "ResetAfter", "ResetBefore", "ResetOnArrival", "ShardInfo", "Slow", "Step", "StoredRecord", "UserRecord",
    "hash_key_of",
]

_ENTRY_MESSAGES = {
    THROTTLED: "Rate exceeded for shard {shard} in stream {stream} under account " + ACCOUNT_ID + ".",
    INTERNAL_FAILURE: "Internal service failure.",
}
# How often wait_until re-checks its predicate when no put call arrives (e.g. it depends on time).
WAIT_RECHECK_S = 0.05
_OPERATIONS = frozenset({"DescribeStreamSummary", "ListShards"}) | PUT_OPERATIONS


class FakeKinesis:
    """A multi-shard Kinesis endpoint on 127.0.0.1 (listening once constructed); see the module docstring."""

    def __init__(
        self,
        shards: int = 1,
        *,
        stream: str = DEFAULT_STREAM,
        seed: int = 0,
        stream_mode: str = "PROVISIONED",
        max_record_bytes: int = MAX_RECORD_BYTES,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        reject_closed_for_s: float = 0.0,
        credentials: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if shards < 1:
            raise ValueError("a stream has at least one shard")
        self.stream = stream
        self.stream_arn = f"arn:aws:kinesis:{REGION}:{ACCOUNT_ID}:stream/{stream}"
        self.stream_mode = stream_mode
        self.stream_status = "ACTIVE"  # what DescribeStreamSummary says (a test may set UPDATING, DELETING ...)
        self.max_record_bytes = max_record_bytes
        self.max_request_bytes = max_request_bytes
        self.reject_closed_for_s = reject_closed_for_s
        # Access key id -> secret: requests must be SigV4-signed by one of them (None: signatures unchecked).
        self.credentials = dict(credentials) if credentials is not None else None
        self.clock = clock
        self.faults = Faults()
        self._initial_shards = shards
        self._seed = seed
        self._lock = threading.Lock()
        self._closing = threading.Event()
        # Waiters wake on every handled put call and reshard (`_version` moves), never on a bare timer only.
        self._changed = threading.Condition(threading.Lock())
        self._version = 0
        # user_records() opens each stored record once: the members so far, for the records before `_users_upto`.
        self._users_lock = threading.Lock()
        self._users: list[UserRecord] = []
        self._users_upto = 0
        self._epoch = 0  # +1 on reset: the user-record cache starts again
        self._users_epoch = 0
        self._reset_state()
        self._server = serve(self._serve_request, self._closing, self._connection_opened, self._reset_on_arrival)

    # --- lifecycle ---------------------------------------------------------------------------------

    def _connection_opened(self) -> None:
        with self._lock:
            self._connections += 1

    @property
    def url(self) -> str:
        """The endpoint URL (``http://127.0.0.1:<port>``) for boto3's ``endpoint_url``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    endpoint_url = url

    def close(self) -> None:
        """Stops listening and resets every open connection, as a dying endpoint does; answers still held
        back by a slow fault are dropped (reset). Afterwards, connecting is refused."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()

    def __enter__(self) -> FakeKinesis:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def client(self, **config: Any) -> Any:
        """A boto3 Kinesis client for this fake: us-east-1, botocore's own retries off, dummy keys (the first
        of `credentials` when signatures are checked); `config` goes to botocore's Config."""
        key, secret = next(iter(self.credentials.items())) if self.credentials else ("fake", "fake")
        return boto3.client(
            "kinesis",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(**({"retries": {"total_max_attempts": 1, "mode": "standard"}} | config)),
        )

    def reset(self) -> None:
        """Back to the state just after construction: records, counters, faults, limits, scripts, shards."""
        with self._lock:
            self._reset_state()
            self.faults = Faults()
            self._epoch += 1
        self._notify()

    def _notify(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def wait_until(self, predicate: Callable[[FakeKinesis], bool], timeout_s: float) -> bool:
        """Whether `predicate(fake)` became true within `timeout_s`: checked now, after every put call the fake
        handled and every reshard, and at least every WAIT_RECHECK_S. For tests to wait on what landed."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._changed:
                seen = self._version
            if predicate(self):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                if self._version == seen:
                    self._changed.wait(min(remaining, WAIT_RECHECK_S))

    def wait_for_user_records(self, count: int, timeout_s: float) -> bool:
        """Whether at least `count` user records (aggregates opened) are stored within `timeout_s`."""
        return self.wait_until(lambda fake: len(fake.user_records()) >= count, timeout_s)

    def _reset_state(self) -> None:
        self._rng = random.Random(self._seed)
        self._shards = ShardSet(self._initial_shards)
        self._records: list[StoredRecord] = []
        self._scripts: dict[str, list[Step]] = {}
        self._records_per_s: float | None = None
        self._bytes_per_s: float | None = None
        self._calls: Counter[str] = Counter()
        self._entries_per_call: list[int] = []
        self._connections = 0
        self._throttled: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._internal_errors: list[str] = []
        self._refused_signatures = 0

    # --- test controls -----------------------------------------------------------------------------

    def script(self, *steps: Step, operation: str = "PutRecords") -> None:
        """The next calls of `operation` take these steps, one each, in order (added after any pending)."""
        with self._lock:
            self._scripts.setdefault(operation, []).extend(steps)

    def pending_steps(self, operation: str = "PutRecords") -> int:
        """How many scripted steps of `operation` are still to be taken."""
        with self._lock:
            return len(self._scripts.get(operation, []))

    def set_faults(self, **changes: Any) -> None:
        """Changes random faults at once (``set_faults(entry_failure_rate=0.3)``); unknown names raise."""
        with self._lock:
            self.faults = replace(self.faults, **changes)

    def limit_shards(self, records_per_s: float | None = None, bytes_per_s: float | None = None) -> None:
        """Per-shard write limits over a rolling second (None: unlimited); ``limit_shards()`` lifts them."""
        with self._lock:
            self._records_per_s = records_per_s
            self._bytes_per_s = bytes_per_s
            for shard in self._shards:
                shard.window.clear()
                shard.window_bytes = 0

    def split(self, shard_id: str, new_starting_hash_key: int | None = None) -> tuple[str, str]:
        """Splits an open shard at `new_starting_hash_key` (default: the middle); returns the children's ids."""
        with self._lock:
            low, high = self._shards.split(shard_id, new_starting_hash_key, self.clock())
        self._notify()
        return low.shard_id, high.shard_id

    def merge(self, shard_id: str, adjacent_shard_id: str) -> str:
        """Merges two open adjacent shards; returns the child's id (ParentShardId is `shard_id`)."""
        with self._lock:
            child = self._shards.merge(shard_id, adjacent_shard_id, self.clock())
        self._notify()
        return child.shard_id

    # --- what the tests read -----------------------------------------------------------------------

    def shards(self, *, open_only: bool = False) -> list[ShardInfo]:
        """Every shard in creation order (closed ones too unless `open_only`)."""
        with self._lock:
            return self._shards.infos(open_only=open_only)

    def shard_of(self, hash_key: int) -> str:
        """The id of the open shard whose range holds `hash_key` now."""
        with self._lock:
            return self._shards.route(hash_key).shard_id

    def keys_in_shard(self, shard_id: str, count: int, prefix: str = "key-") -> list[str]:
        """`count` partition keys (``prefix`` + a number) whose MD5 routes to the open shard `shard_id` now."""
        with self._lock:
            shard = self._shards.get(shard_id)
            if shard is None or not shard.info().is_open:
                raise ValueError(f"{shard_id} is not an open shard")
        keys: list[str] = []
        number = 0
        while len(keys) < count:
            key = f"{prefix}{number}"
            if shard.start <= hash_key_of(key) <= shard.end:
                keys.append(key)
            number += 1
        return keys

    def records(self, shard_id: str | None = None) -> list[StoredRecord]:
        """The Kinesis records stored (all, or one shard's), in arrival order."""
        with self._lock:
            return [r for r in self._records if shard_id is None or r.shard_id == shard_id]

    def user_records(self) -> list[UserRecord]:
        """Every user record, in arrival order: KPL aggregates opened with aws_kinesis_agg's deaggregator
        (each stored record is opened once, so calling this while waiting stays cheap)."""
        with self._users_lock:
            with self._lock:
                if self._users_epoch != self._epoch:
                    self._users, self._users_upto, self._users_epoch = [], 0, self._epoch
                new = self._records[self._users_upto:]
                self._users_upto = len(self._records)
            self._users.extend(user for stored in new for user in deaggregate(stored))
            return list(self._users)

    def misrouted_user_records(self) -> list[UserRecord]:
        """User records whose own hash key lies outside the range of the shard their Kinesis record landed in
        (a consumer such as the KCL drops them)."""
        with self._lock:
            ranges = {s.shard_id: (s.start, s.end) for s in self._shards}
        return [u for u in self.user_records() if not ranges[u.shard_id][0] <= u.hash_key <= ranges[u.shard_id][1]]

    def data_counts(self) -> Counter[bytes]:
        """How often each user record's bytes are in the stream: compare with Counter(input) for exactly-once."""
        return Counter(u.data for u in self.user_records())

    def stats(self) -> FakeStats:
        """A snapshot of the counters."""
        with self._lock:
            return FakeStats(
                calls=Counter(self._calls), entries_per_call=tuple(self._entries_per_call),
                connections=self._connections, throttled=Counter(self._throttled), injected=Counter(self._injected),
                refused_entries=Counter(self._refused), accepted=Counter(r.shard_id for r in self._records),
                internal_errors=tuple(self._internal_errors), refused_signatures=self._refused_signatures,
            )

    # --- requests ----------------------------------------------------------------------------------

    def _reset_on_arrival(self, target: str) -> bool:
        operation = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else target
        with self._lock:
            steps = self._scripts.get(operation)
            if not steps or not isinstance(steps[0], ResetOnArrival):
                return False
            steps.pop(0)
            self._calls[operation] += 1
            self._injected["reset_on_arrival"] += 1
            return True

    def _serve_request(self, request: RawRequest) -> Answer:
        return self._handle(request.headers.get("x-amz-target", ""), request.body, request)

    def _handle(self, target: str, raw: bytes, request: RawRequest | None = None) -> Answer:
        operation = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else target
        with self._lock:
            self._calls[operation] += 1
        if self.credentials is not None and request is not None:
            try:
                check_signature(self.credentials, REGION, method=request.method, target_path=request.path,
                                headers=request.headers, body=request.body)
            except KinesisError as refused:
                with self._lock:
                    self._refused_signatures += 1
                return Answer(refused.status, {"__type": refused.code, "message": refused.message})
        with self._lock:
            steps = self._scripts.get(operation)
            step = steps.pop(0) if steps else None
        try:
            if operation not in _OPERATIONS:
                raise KinesisError("UnknownOperationException", f"Unknown operation {operation!r}")
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise KinesisError("SerializationException", "The request body is not JSON") from None
            if not isinstance(body, dict):
                raise KinesisError("SerializationException", "The request body is not a JSON object")
            if callable(step):
                return verbatim(step(body))
            if operation in PUT_OPERATIONS:
                return self._put(operation, body, step)
            return self._read(operation, body, step)
        except KinesisError as error:
            return Answer(error.status, {"__type": error.code, "message": error.message})
        except Exception as bug:  # noqa: BLE001 - a defect of the fake itself: kept for the tests, answered as a 500
            with self._lock:
                self._internal_errors.append(f"{operation}: {type(bug).__name__}: {bug}")
            return Answer(500, {"__type": INTERNAL_FAILURE, "message": f"fake kinesis defect: {bug}"})

    def _read(self, operation: str, body: dict[str, Any], step: Step | None) -> Answer:
        if isinstance(step, CallError):
            raise KinesisError(step.code, step.message or step.code, step.status)
        if isinstance(step, ResetOnArrival | ResetBefore | ResetAfter):
            return Answer(reset=True)
        with self._lock:
            if operation == "ListShards":
                if "NextToken" not in body:  # the token names the stream, and must come alone
                    self._check_stream(body)
                payload = list_shards(body, self.stream, self._shards.infos())
            else:
                self._check_stream(body)
                payload = self._summary()
        return Answer(payload=payload, delay_s=step.delay_s if isinstance(step, Slow) else 0.0)

    def _summary(self) -> dict[str, Any]:
        return {"StreamDescriptionSummary": {
            "StreamName": self.stream, "StreamARN": self.stream_arn, "StreamStatus": self.stream_status,
            "StreamModeDetails": {"StreamMode": self.stream_mode}, "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": 1_700_000_000, "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE", "OpenShardCount": self._shards.open_count, "ConsumerCount": 0,
            "MaxRecordSizeInKiB": self.max_record_bytes // 1024,
        }}

    def _check_stream(self, body: dict[str, Any]) -> None:
        name, arn = body.get("StreamName"), body.get("StreamARN")
        if name is None and arn is None:
            raise KinesisError("ValidationException", "Either StreamName or StreamARN must be provided.")
        if (name is not None and name != self.stream) or (arn is not None and arn != self.stream_arn):
            raise KinesisError("ResourceNotFoundException", f"Stream {name or arn} under account {ACCOUNT_ID} not found.")

    def _put(self, operation: str, body: dict[str, Any], step: Step | None) -> Answer:
        try:
            return self._put_now(operation, body, step)
        finally:
            self._notify()

    def _put_now(self, operation: str, body: dict[str, Any], step: Step | None) -> Answer:
        if operation == "PutRecords":
            entries = parse_put_records(body, self.max_record_bytes, self.max_request_bytes)
        else:
            entries = [parse_entry(body, "", self.max_record_bytes)]
        with self._lock:
            self._check_stream(body)
            if operation == "PutRecords":
                self._entries_per_call.append(len(entries))
            plan = plan_for(step, self.faults, self._rng.random)
            if plan.reset_before:
                self._injected["reset_before"] += 1
                return Answer(reset=True)
            if plan.call_error is not None:
                self._injected["call_failure"] += 1
                error = plan.call_error
                raise KinesisError(error.code, error.message or error.code, error.status)
            self._reject_closed(entries)
            failed, results = self._store(entries, plan)
            if plan.reset_after:
                self._injected["reset_after"] += 1
                return Answer(reset=True)
            if plan.delay_s > 0:
                self._injected["slow"] += 1
        if operation == "PutRecord":
            only = results[0]
            if "ErrorCode" in only:
                raise KinesisError(only["ErrorCode"], only["ErrorMessage"])
            return Answer(payload=only | {"EncryptionType": "NONE"}, delay_s=plan.delay_s)
        payload = {"FailedRecordCount": failed, "Records": results, "EncryptionType": "NONE"}
        return Answer(payload=payload, delay_s=plan.delay_s)

    def _reject_closed(self, entries: list[WireEntry]) -> None:
        if self.reject_closed_for_s <= 0:
            return
        for shard in self._shards.closed_since(self.clock() - self.reject_closed_for_s):
            if any(shard.start <= e.hash_key <= shard.end for e in entries):
                self._injected["closed_shard"] += 1
                raise KinesisError("ResourceNotFoundException",
                                   f"Shard {shard.shard_id} in stream {self.stream} under account {ACCOUNT_ID} is closed.")

    def _store(self, entries: list[WireEntry], plan: Plan) -> tuple[int, list[dict[str, str]]]:
        now = self.clock()
        records_per_s, bytes_per_s = self._records_per_s, self._bytes_per_s
        limited = records_per_s is not None or bytes_per_s is not None
        faults = self.faults
        failure_rate = faults.entry_failure_rate if plan.random_entries else 0.0
        codes = plan.entry_codes or {}
        results: list[dict[str, str]] = []
        failed = 0
        for position, entry in enumerate(entries):
            shard = self._shards.route(entry.hash_key)
            code = codes.get(position)
            if code is None and failure_rate > 0 and self._rng.random() < failure_rate:
                code = faults.entry_failure_code
            if code is not None:
                self._injected["entry_failure"] += 1
            elif limited and not shard.admit(now, entry.size, records_per_s, bytes_per_s):
                code = THROTTLED
                self._throttled[shard.shard_id] += 1
            if code is not None:
                failed += 1
                self._refused[code] += 1
                message = _ENTRY_MESSAGES.get(code, code).format(shard=shard.shard_id, stream=self.stream)
                results.append({"ErrorCode": code, "ErrorMessage": message})
                continue
            sequence = shard.sequence(shard.next_seq)
            shard.next_seq += 1
            self._records.append(StoredRecord(entry.data, entry.partition_key, entry.explicit_hash_key, entry.hash_key,
                                              shard.shard_id, sequence, len(self._records), now))
            results.append({"SequenceNumber": sequence, "ShardId": shard.shard_id})
        return failed, results
