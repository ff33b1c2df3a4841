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
of their key) lies outside that shard's range; ``data_counts()`` is a Counter of user data bytes;
``data_by_key()`` lists each partition key's user data in stream order (for ordering checks).
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
from tests.fake_kinesis_requests import deaggregate
from tests.fake_kinesis_stream import KinesisStream
from tests.fake_kinesis_types import (
    DEFAULT_STREAM,
    INTERNAL_FAILURE,
    KPL_MAGIC,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    RATE_WINDOW_S,
    REGION,
    THROTTLED,
    CallError,
    EntryErrors,
    FakeStats,
    Faults,
    KinesisError,
    ManualClock,
    Normal,
    ResetAfter,
    ResetBefore,
    ResetOnArrival,
    ShardInfo,
    Slow,
    Step,
    StoredRecord,
    UserRecord,
    hash_key_of,
)

__all__ = [
    "DEFAULT_STREAM", "INTERNAL_FAILURE", "KPL_MAGIC", "RATE_WINDOW_S", "REGION", "THROTTLED",
    "CallError", "EntryErrors", "FakeKinesis", "FakeStats", "Faults", "KinesisError", "ManualClock", "Normal",
    "ResetAfter", "ResetBefore", "ResetOnArrival", "ShardInfo", "Slow", "Step", "StoredRecord", "UserRecord",
    "hash_key_of",
]

# How often wait_until re-checks its predicate when no put call arrives (e.g. it depends on time).
WAIT_RECHECK_S = 0.05


class FakeKinesis(KinesisStream):
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
        super().__init__(shards, stream=stream, seed=seed, stream_mode=stream_mode, max_record_bytes=max_record_bytes,
                         max_request_bytes=max_request_bytes, reject_closed_for_s=reject_closed_for_s,
                         credentials=credentials, clock=clock)
        self._closing = threading.Event()
        # user_records() opens each stored record once: the members so far, for the records before `_users_upto`.
        self._users_lock = threading.Lock()
        self._users: list[UserRecord] = []
        self._users_upto = 0
        self._epoch = 0  # +1 on reset: the user-record cache starts again
        self._users_epoch = 0
        self._server = serve(self._serve_request, self._closing, self._connection_opened, self._reset_on_arrival)

    # --- lifecycle ---------------------------------------------------------------------------------

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
        return self.wait_until(lambda fake: fake._user_record_count() >= count, timeout_s)

    def _user_record_count(self) -> int:
        with self._users_lock:
            self._open_new_records()
            return len(self._users)

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
            self._open_new_records()
            return list(self._users)

    def _open_new_records(self) -> None:
        # Under _users_lock: deaggregates the records stored since the last call onto the cache.
        with self._lock:
            if self._users_epoch != self._epoch:
                self._users, self._users_upto, self._users_epoch = [], 0, self._epoch
            new = self._records[self._users_upto:]
            self._users_upto = len(self._records)
        self._users.extend(user for stored in new for user in deaggregate(stored))

    def misrouted_user_records(self) -> list[UserRecord]:
        """User records whose own hash key lies outside the range of the shard their Kinesis record landed in
        (a consumer such as the KCL drops them)."""
        with self._lock:
            ranges = {s.shard_id: (s.start, s.end) for s in self._shards}
        return [u for u in self.user_records() if not ranges[u.shard_id][0] <= u.hash_key <= ranges[u.shard_id][1]]

    def data_by_key(self) -> dict[str, list[bytes]]:
        """Each partition key's user data in stream order (by sequence number and position inside an aggregate,
        a closed parent's records before its children's, as a consumer reads them): for per-key order checks."""
        by_key: dict[str, list[bytes]] = {}
        for user in sorted(self.user_records(), key=lambda u: (u.shard_id, int(u.sequence_number), u.sub_index or 0)):
            by_key.setdefault(user.partition_key, []).append(user.data)
        return by_key

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
