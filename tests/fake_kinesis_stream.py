"""The stream behind tests/fake_kinesis.py's FakeKinesis: its state (shards, stored records, counters, faults,
scripts) and how each request is answered. FakeKinesis adds the HTTP server and what the tests read."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from tests.fake_kinesis_requests import list_shards, parse_entry, parse_put_records, verbatim
from tests.fake_kinesis_shards import ShardSet
from tests.fake_kinesis_sigv4 import check_signature
from tests.fake_kinesis_types import (
    ACCOUNT_ID,
    DEFAULT_STREAM,
    INTERNAL_FAILURE,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    PUT_OPERATIONS,
    REGION,
    TARGET_PREFIX,
    THROTTLED,
    Answer,
    CallError,
    Faults,
    KinesisError,
    Plan,
    RawRequest,
    ResetAfter,
    ResetBefore,
    ResetOnArrival,
    Slow,
    Step,
    StoredRecord,
    WireEntry,
    plan_for,
)

_ENTRY_MESSAGES = {
    THROTTLED: "Rate exceeded for shard {shard} in stream {stream} under account " + ACCOUNT_ID + ".",
    INTERNAL_FAILURE: "Internal service failure.",
}
_OPERATIONS = frozenset({"DescribeStreamSummary", "ListShards"}) | PUT_OPERATIONS


class KinesisStream:
    """One stream's state and request handling, thread-safe under ``_lock`` (see tests/fake_kinesis.py)."""

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
        # Waiters wake on every handled put call and reshard (`_version` moves), never on a bare timer only.
        self._changed = threading.Condition(threading.Lock())
        self._version = 0
        self._reset_state()

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

    def _connection_opened(self) -> None:
        with self._lock:
            self._connections += 1

    def _notify(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

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
                known = _ENTRY_MESSAGES.get(code)
                message = known.format(shard=shard.shard_id, stream=self.stream) if known else code
                results.append({"ErrorCode": code, "ErrorMessage": message})
                continue
            sequence = shard.sequence(shard.next_seq)
            shard.next_seq += 1
            self._records.append(StoredRecord(entry.data, entry.partition_key, entry.explicit_hash_key, entry.hash_key,
                                              shard.shard_id, sequence, len(self._records), now))
            results.append({"SequenceNumber": sequence, "ShardId": shard.shard_id})
        return failed, results
