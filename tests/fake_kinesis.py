"""FakeKinesis: a real HTTP/1.1 multi-shard Kinesis endpoint on 127.0.0.1 with seeded fault injection.

It speaks the Kinesis JSON 1.1 protocol (``X-Amz-Target: Kinesis_20131202.<Op>``, JSON bodies, answers as
``application/x-amz-json-1.1``, errors as ``{"__type": code, "message": ...}`` with AWS's HTTP status), so
boto3 (``endpoint_url=fake.url``, any dummy keys, region us-east-1) and a hand-made client both work.
Operations: DescribeStreamSummary, ListShards (MaxResults/NextToken pagination, ShardFilter, and Kinesis's
rule that NextToken goes alone), PutRecords, PutRecord. Signatures are not checked.

Usage::

    with FakeKinesis(shards=4, seed=1) as fake:
        client = fake.client()                       # boto3, dummy keys, no botocore retries
        fake.faults.entry_failure_rate = 0.3         # 30 % of entries refused in a 200 partial answer
        fake.limit_shards(records_per_s=1000)        # rolling 1 s window per shard
        fake.script(CallError(500, "InternalFailure"), ResetAfter())   # the next two PutRecords calls
        child_a, child_b = fake.split("shardId-000000000000")
        ...
        assert fake.data_counts() == Counter(expected)  # exactly once, over deaggregated user records

Model: one stream (``stream``, default ``DEFAULT_STREAM``) of ``shards`` shards with even hash-key ranges over
[0, 2^128-1], ids ``shardId-000000000000``...; sequence numbers are 56-digit decimal strings increasing per
shard. A PutRecords call is validated first (a bad request is a 400 ValidationException naming the first bad
``records.<n>.member.<field>``, 1-based like AWS, whatever the faults), then each entry in order: a scripted or
injected entry failure, else the shard's rate limit, else stored. Every accepted record is kept with its bytes,
key, explicit hash key, shard, sequence number and arrival order (``records()``); ``user_records()`` opens KPL
aggregates with aws_kinesis_agg's deaggregator.

Faults (all seeded by ``seed``, thread-safe, changeable while requests run):

- ``fake.faults`` (a ``Faults``): random per-call and per-entry faults for PutRecords/PutRecord. Per call,
  in this order: ``reset_before_rate`` (the request is read, then the socket is reset: nothing stored),
  ``call_failure_rate`` (``call_failure_status`` + ``call_failure_code``, nothing stored), per entry
  ``entry_failure_rate`` (``entry_failure_code`` in a 200 answer with FailedRecordCount), then
  ``reset_after_rate`` (stored, then reset without an answer: the lost answer that yields duplicates on
  resend) and ``slow_rate`` (stored, the answer delayed by ``slow_delay_s``: a client timing out first has
  lost the answer too).
- ``fake.script(*steps, operation="PutRecords")``: the next calls of that operation take these steps in turn
  instead of the random faults: ``CallError``, ``EntryErrors`` (0-based positions -> code), ``ResetBefore``,
  ``ResetAfter``, ``Slow``, ``Normal``, or a callable ``(request body) -> dict | tests.fakes.Reply`` answered
  verbatim with nothing stored (like tests/sinks/conftest.py ScriptedKinesis).
- ``fake.limit_shards(records_per_s, bytes_per_s)``: per shard, entries beyond either limit over the last
  second (``RATE_WINDOW_S``, on ``clock``) are refused with ProvisionedThroughputExceededException;
  ``stats().throttled`` counts them per shard. Bytes count data + partition key, as Kinesis does.
- ``fake.split(shard_id)`` / ``fake.merge(a, b)``: resharding at once; the parent gets an
  EndingSequenceNumber, children get ParentShardId (and AdjacentParentShardId), writes route by the new
  open shards. ``reject_closed_for_s`` (default 0: off): for that long after a reshard, a PutRecords call
  with an entry in a closed shard's range answers 400 ResourceNotFoundException, like the brief window
  after a real reshard.

Counters: ``fake.stats()`` returns a ``FakeStats`` snapshot (calls per operation, entries per PutRecords call,
connections accepted, throttled entries per shard, injected faults by kind, refused entries by code).
``fake.reset()`` clears records, counters, faults, limits and scripts and restores the initial shards.
"""

from __future__ import annotations

import bisect
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
    Normal,
    Plan,
    RawRequest,
    ResetAfter,
    ResetBefore,
    ShardInfo,
    ShardState,
    Slow,
    Step,
    StoredRecord,
    UserRecord,
    WireEntry,
    even_ranges,
    hash_key_of,
)

__all__ = [
    "DEFAULT_STREAM", "INTERNAL_FAILURE", "KPL_MAGIC", "RATE_WINDOW_S", "REGION", "THROTTLED", "CallError", "EntryErrors",
    "FakeKinesis", "FakeStats", "Faults", "KinesisError", "Normal", "ResetAfter", "ResetBefore", "ShardInfo",
    "Slow", "Step", "StoredRecord", "UserRecord", "hash_key_of",
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
        self._server = serve(self._serve_request, self._closing, self._connection_opened)

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
        """Stops listening; answers still held back by a slow fault are dropped (reset)."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

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
        self._shards: list[ShardState] = [ShardState(f"shardId-{i:012d}", i, start, end)
                                          for i, (start, end) in enumerate(even_ranges(self._initial_shards))]
        self._by_id = {s.shard_id: s for s in self._shards}
        self._route_table()
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
            parent = self._open_shard(shard_id)
            middle = (parent.start + parent.end + 1) // 2 if new_starting_hash_key is None else new_starting_hash_key
            if not parent.start < middle <= parent.end:
                raise ValueError(f"{middle} is not inside {shard_id}'s range (start excluded)")
            self._close(parent)
            low = self._add_shard(parent.start, middle - 1, parent.shard_id, None)
            high = self._add_shard(middle, parent.end, parent.shard_id, None)
        self._notify()
        return low.shard_id, high.shard_id

    def merge(self, shard_id: str, adjacent_shard_id: str) -> str:
        """Merges two open adjacent shards; returns the child's id (ParentShardId is `shard_id`)."""
        with self._lock:
            first, second = self._open_shard(shard_id), self._open_shard(adjacent_shard_id)
            low, high = sorted((first, second), key=lambda s: s.start)
            if low.end + 1 != high.start:
                raise ValueError(f"{shard_id} and {adjacent_shard_id} are not adjacent")
            self._close(first)
            self._close(second)
            child = self._add_shard(low.start, high.end, first.shard_id, second.shard_id)
        self._notify()
        return child.shard_id

    def _open_shard(self, shard_id: str) -> ShardState:
        shard = self._by_id.get(shard_id)
        if shard is None or shard.ending_sequence is not None:
            raise ValueError(f"{shard_id} is not an open shard")
        return shard

    def _close(self, shard: ShardState) -> None:
        shard.ending_sequence = shard.sequence(max(shard.next_seq - 1, 0))
        shard.closed_at = self.clock()

    def _add_shard(self, start: int, end: int, parent: str, adjacent: str | None) -> ShardState:
        ordinal = len(self._shards)
        shard = ShardState(f"shardId-{ordinal:012d}", ordinal, start, end, parent, adjacent)
        self._shards.append(shard)
        self._by_id[shard.shard_id] = shard
        self._route_table()
        return shard

    def _route_table(self) -> None:
        self._open = sorted((s for s in self._shards if s.ending_sequence is None), key=lambda s: s.start)
        self._open_starts = [s.start for s in self._open]

    def _route(self, hash_key: int) -> ShardState:
        return self._open[bisect.bisect_right(self._open_starts, hash_key) - 1]

    # --- what the tests read -----------------------------------------------------------------------

    def shards(self, *, open_only: bool = False) -> list[ShardInfo]:
        """Every shard in creation order (closed ones too unless `open_only`)."""
        with self._lock:
            return [s.info() for s in self._shards if not open_only or s.ending_sequence is None]

    def shard_of(self, hash_key: int) -> str:
        """The id of the open shard whose range holds `hash_key` now."""
        with self._lock:
            return self._route(hash_key).shard_id

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
        if isinstance(step, ResetBefore | ResetAfter):
            return Answer(reset=True)
        with self._lock:
            if operation == "ListShards":
                if "NextToken" not in body:  # the token names the stream, and must come alone
                    self._check_stream(body)
                payload = list_shards(body, self.stream, [s.info() for s in self._shards])
            else:
                self._check_stream(body)
                payload = self._summary()
        return Answer(payload=payload, delay_s=step.delay_s if isinstance(step, Slow) else 0.0)

    def _summary(self) -> dict[str, Any]:
        return {"StreamDescriptionSummary": {
            "StreamName": self.stream, "StreamARN": self.stream_arn, "StreamStatus": "ACTIVE",
            "StreamModeDetails": {"StreamMode": self.stream_mode}, "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": 1_700_000_000, "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE", "OpenShardCount": len(self._open), "ConsumerCount": 0,
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
            plan = self._plan(step)
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

    def _plan(self, step: Step | None) -> Plan:
        if step is None:
            f, draw = self.faults, self._rng.random
            reset_before, call_failure, reset_after, slow = draw(), draw(), draw(), draw()
            return Plan(reset_before=reset_before < f.reset_before_rate,
                        call_error=(CallError(f.call_failure_status, f.call_failure_code)
                                    if call_failure < f.call_failure_rate else None),
                        reset_after=reset_after < f.reset_after_rate, delay_s=f.slow_delay_s if slow < f.slow_rate else 0.0,
                        random_entries=True)
        if isinstance(step, Slow):
            return replace(self._plan(step.then), delay_s=step.delay_s)
        return Plan(reset_before=isinstance(step, ResetBefore), call_error=step if isinstance(step, CallError) else None,
                    reset_after=isinstance(step, ResetAfter), entry_codes=step.codes if isinstance(step, EntryErrors) else None)

    def _reject_closed(self, entries: list[WireEntry]) -> None:
        if self.reject_closed_for_s <= 0:
            return
        now = self.clock()
        recent = [s for s in self._shards if s.closed_at is not None and now - s.closed_at < self.reject_closed_for_s]
        for shard in recent:
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
            shard = self._route(entry.hash_key)
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
                                              shard.shard_id, sequence, len(self._records)))
            results.append({"SequenceNumber": sequence, "ShardId": shard.shard_id})
        return failed, results
