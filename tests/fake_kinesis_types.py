"""The value types, constants and scripted steps of tests/fake_kinesis.py (import them from there)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

DEFAULT_STREAM = "tweets-under-test"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
TARGET_PREFIX = "Kinesis_20131202."
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_HASH_KEY = 2**128 - 1
# Kinesis's PutRecords limits (sizes are raw bytes, before base64).
MAX_RECORDS_PER_CALL = 500
MAX_RECORD_BYTES = 1024 * 1024  # data + partition key
MAX_REQUEST_BYTES = 5 * 1024 * 1024
MAX_PARTITION_KEY_CHARS = 256
LIST_SHARDS_DEFAULT_RESULTS = 1000
LIST_SHARDS_MAX_RESULTS = 10_000
RATE_WINDOW_S = 1.0  # per-shard limits are per second, over a rolling window
# serve_forever's poll interval: how long stop() waits; the stdlib's 0.5 s would add half a second a test.
SHUTDOWN_POLL_S = 0.05
THROTTLED = "ProvisionedThroughputExceededException"
INTERNAL_FAILURE = "InternalFailure"
KPL_MAGIC = b"\xf3\x89\x9a\xc2"  # then AggregatedRecord protobuf, then its MD5
KPL_DIGEST_BYTES = 16
PUT_OPERATIONS = frozenset({"PutRecords", "PutRecord"})
EXPLICIT_HASH_KEY = re.compile(r"0|[1-9][0-9]{0,38}")
CLIENT_ERROR_STATUS = 400
SERVER_ERROR_STATUS = {"InternalFailure": 500, "ServiceUnavailable": 503}


# --- what the tests read -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard as ListShards shows it; ``ending_sequence`` is None while the shard is open."""

    shard_id: str
    start: int  # inclusive hash-key range
    end: int
    parent_id: str | None
    adjacent_parent_id: str | None
    starting_sequence: str
    ending_sequence: str | None

    @property
    def is_open(self) -> bool:
        return self.ending_sequence is None

    def holds(self, hash_key: int) -> bool:
        return self.start <= hash_key <= self.end


class StoredRecord(NamedTuple):
    """One Kinesis record the fake accepted (an aggregate counts as one). A NamedTuple: one is made per
    accepted entry, and a frozen dataclass costs three times as much to make."""

    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    hash_key: int  # what it was routed by: the explicit hash key, else MD5(partition key)
    shard_id: str
    sequence_number: str
    arrival: int  # 0, 1, 2 ... over the whole stream, in the order records were stored
    stored_at: float  # the fake's clock when it was stored: for throughput per shard and second


class UserRecord(NamedTuple):
    """One user record: a plain Kinesis record as it is, or one member of a KPL aggregate."""

    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    hash_key: int  # the member's own routing hash (explicit hash key, else MD5 of its partition key)
    shard_id: str  # where its Kinesis record landed
    sequence_number: str  # its Kinesis record's
    sub_index: int | None  # position inside the aggregate; None for a plain record
    arrival: int  # its Kinesis record's
    stored_at: float  # its Kinesis record's


@dataclass(frozen=True)
class FakeStats:
    """A snapshot of the fake's counters."""

    calls: Counter[str]  # requests received per operation, faulted ones included
    entries_per_call: tuple[int, ...]  # entries in each PutRecords request received, in order
    connections: int  # TCP connections accepted (keep-alive reuses them)
    throttled: Counter[str]  # entries refused by the per-shard rate limit, per shard
    injected: Counter[str]  # faults injected (random or scripted) by kind: entry_failure (entries),
    # call_failure, reset_before, reset_after, slow, closed_shard (calls)
    refused_entries: Counter[str]  # entries refused in 200 answers, by ErrorCode (injected + rate limit)
    accepted: Counter[str]  # Kinesis records stored, per shard
    internal_errors: tuple[str, ...]  # defects of the fake itself (answered as 500s): should stay empty
    refused_signatures: int  # requests refused by the SigV4 check (only with `credentials`)


@dataclass
class Faults:
    """Random PutRecords/PutRecord faults; each rate is a probability per call (per entry for entry faults)."""

    entry_failure_rate: float = 0.0
    entry_failure_code: str = THROTTLED  # or InternalFailure
    call_failure_rate: float = 0.0
    call_failure_status: int = 500
    call_failure_code: str = INTERNAL_FAILURE
    slow_rate: float = 0.0
    slow_delay_s: float = 0.0
    reset_before_rate: float = 0.0
    reset_after_rate: float = 0.0


class ManualClock:
    """A clock a test moves by hand (``clock.now += 1.0``): pass it as ``clock=`` for the rate and closed-shard windows."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- scripted steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normal:
    """Process the call with no fault (not even the random ones)."""


@dataclass(frozen=True)
class CallError:
    """Fail the whole call with this status and error code; nothing stored."""

    status: int = 500
    code: str = INTERNAL_FAILURE
    message: str = ""


@dataclass(frozen=True)
class EntryErrors:
    """Refuse the entries at these 0-based positions with these codes; the others are processed normally."""

    codes: Mapping[int, str]


@dataclass(frozen=True)
class ResetBefore:
    """Read the request, then reset the connection: nothing stored, no answer."""


@dataclass(frozen=True)
class ResetOnArrival:
    """Reset the connection once the headers are read, leaving the body unread: a client still sending a large
    body sees its send fail (it knows the request was not taken); one that sent it all sees the reset on reading."""


@dataclass(frozen=True)
class ResetAfter:
    """Process and store the request, then reset the connection without an answer (the lost answer)."""


@dataclass(frozen=True)
class Slow:
    """Process the call (as ``then`` says, normally by default), then hold the answer ``delay_s`` seconds."""

    delay_s: float
    then: Normal | EntryErrors = field(default_factory=Normal)


Step = Normal | CallError | EntryErrors | ResetOnArrival | ResetBefore | ResetAfter | Slow | Callable[[dict[str, Any]], Any]


class KinesisError(Exception):
    """An error answer: ``{"__type": code, "message": message}`` with ``status``."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else SERVER_ERROR_STATUS.get(code, CLIENT_ERROR_STATUS)


# --- internal state ------------------------------------------------------------------------------------


@dataclass
class ShardState:
    """A shard inside the fake: its range, lineage, sequence counter and rate window (under the fake's lock)."""

    shard_id: str
    ordinal: int
    start: int
    end: int
    parent_id: str | None = None
    adjacent_parent_id: str | None = None
    next_seq: int = 0
    ending_sequence: str | None = None
    closed_at: float | None = None
    # The rolling rate window: (time, size) of each entry accepted in the last second, and their sums.
    window: deque[tuple[float, int]] = field(default_factory=deque)
    window_bytes: int = 0

    def sequence(self, n: int) -> str:
        # 56 digits like Kinesis's; the shard's ordinal in the prefix keeps each shard's numbers apart.
        return f"49{self.ordinal:014d}" + str(n).zfill(40)

    def admit(self, now: float, size: int, records_per_s: float | None, bytes_per_s: float | None) -> bool:
        """Whether one more entry of `size` bytes fits the last second's limits; if so it is counted."""
        horizon = now - RATE_WINDOW_S
        window = self.window
        while window and window[0][0] <= horizon:
            self.window_bytes -= window.popleft()[1]
        if records_per_s is not None and len(window) + 1 > records_per_s:
            return False
        if bytes_per_s is not None and self.window_bytes + size > bytes_per_s:
            return False
        window.append((now, size))
        self.window_bytes += size
        return True

    def info(self) -> ShardInfo:
        return ShardInfo(self.shard_id, self.start, self.end, self.parent_id, self.adjacent_parent_id,
                         self.sequence(0), self.ending_sequence)


@dataclass(frozen=True)
class RawRequest:
    """One HTTP request as received: header names in lower case."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class Answer:
    """What the HTTP handler does with a request."""

    status: int = 200
    payload: dict[str, Any] | None = None
    reset: bool = False
    delay_s: float = 0.0


@dataclass(slots=True)
class WireEntry:
    """One validated entry of a put request."""

    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    hash_key: int
    size: int


def hash_key_of(partition_key: str) -> int:
    """MD5 of the partition key's UTF-8 bytes as a 128-bit big-endian integer: how Kinesis routes it."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8"), usedforsecurity=False).digest(), "big")


def even_ranges(count: int) -> list[tuple[int, int]]:
    """``count`` contiguous inclusive ranges splitting [0, 2^128-1] evenly, as CreateStream makes them."""
    bounds = [(2**128 * i) // count for i in range(count + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(count)]


@dataclass(frozen=True)
class Plan:
    """The faults one put call meets."""

    reset_before: bool = False
    call_error: CallError | None = None
    reset_after: bool = False
    delay_s: float = 0.0
    entry_codes: Mapping[int, str] | None = None  # scripted per-entry refusals
    random_entries: bool = False  # draw per-entry failures from `faults`


def plan_for(step: Step | None, faults: Faults, draw: Callable[[], float]) -> Plan:
    """The faults a put call meets: its scripted step's, else four draws against the random rates."""
    if step is None:
        reset_before, call_failure, reset_after, slow = draw(), draw(), draw(), draw()
        return Plan(reset_before=reset_before < faults.reset_before_rate,
                    call_error=(CallError(faults.call_failure_status, faults.call_failure_code)
                                if call_failure < faults.call_failure_rate else None),
                    reset_after=reset_after < faults.reset_after_rate,
                    delay_s=faults.slow_delay_s if slow < faults.slow_rate else 0.0, random_entries=True)
    if isinstance(step, Slow):
        return replace(plan_for(step.then, faults, draw), delay_s=step.delay_s)
    return Plan(reset_before=isinstance(step, ResetBefore | ResetOnArrival),
                call_error=step if isinstance(step, CallError) else None, reset_after=isinstance(step, ResetAfter),
                entry_codes=step.codes if isinstance(step, EntryErrors) else None)
