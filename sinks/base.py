"""The tiny contract between the daemon and a sink: the daemon buffers, the sink batches and delivers.

Flow: the daemon calls `prepare(record)` once per record, in the source's thread (the sink encodes it,
or rejects it with a reason), buffers the entries, then `start(completion)` once and `submit(entries,
deadline)` as they come; the sink groups them as its destination wants, keeps as many requests in flight
as it likes and reports each entry's end exactly once through `completion`: sent, failed (dead-letter,
with a reason) or unsent (not delivered by the deadline). `finish(deadline)` ends it.

`BatchSink` (sinks/batch.py) gives that contract to sinks that just write one batch at a time.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field


@dataclass(slots=True)
class Record:
    """One record on its way from a source to a sink."""

    data: bytes  # the exact bytes to deliver
    # `data` parsed (e.g. a JSON object), for sinks that read keys from it in `prepare`. The daemon drops
    # it (sets None) once `prepare` returned, so buffered records cost their bytes, not a parsed tree.
    event: Any
    source: str  # name of the source that emitted it
    origin: str  # where it came from, e.g. "tweets.jsonl:42"
    # The source's position for this record (opaque to sinks): handed back to the source once the record
    # reached its end, so the source can move its checkpoint past it.
    token: Any = None
    # A partition key chosen before the sink (a source's `partition_key` transform); None: the sink's own rule.
    partition_key: str | None = None


def key_text(value: Any) -> str | None:
    """A value as partition key text: a non-empty string, or an integer's digits; None for anything else (bools
    are not ids, and an integer with more digits than Python converts is not one either)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # more digits than sys.get_int_max_str_digits allows
            return None
    return None


class Entry(Protocol):
    """A record encoded by a sink; `size` counts what it adds to a request against the sink's limits."""

    @property
    def record(self) -> Record: ...

    @property
    def size(self) -> int: ...


E = TypeVar("E", bound=Entry)
E_contra = TypeVar("E_contra", bound=Entry, contravariant=True)


class Completion(Protocol[E_contra]):
    """How a sink reports what became of each submitted entry; the daemon implements it.

    Thread-safe: call it from any of the sink's threads, once per entry, in batches (never per record on
    a hot path). Report user entries, never a sink's own groupings of them (aggregates).
    """

    def sent(self, entries: Sequence[E_contra]) -> None:
        """The destination took these entries."""
        ...

    def failed(self, items: Sequence[tuple[E_contra, str, str]]) -> None:
        """(entry, reason, detail): the destination can never take these; they are dead-lettered."""
        ...

    def unsent(self, entries: Sequence[E_contra], detail: str) -> None:
        """Not delivered before the deadline; kept for replay, not dead."""
        ...


class RecordRejected(Exception):
    """Raised by `Sink.prepare` for a record the destination can never accept (it is dead-lettered)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Deadline:
    """When a write must give up. The daemon can bring it forward (on shutdown) while a write is running."""

    def __init__(self, at: float | None = None) -> None:
        self._at = at  # time.monotonic() value, or None for "no deadline"
        self._changed = threading.Event()

    def set(self, at: float) -> None:
        self._at = at
        self._changed.set()

    @property
    def at(self) -> float | None:
        """The time.monotonic() value it passes at, or None without a deadline."""
        return self._at

    def remaining(self) -> float | None:
        """Seconds left, or None without a deadline."""
        return None if self._at is None else max(0.0, self._at - time.monotonic())

    def expired(self) -> bool:
        return self._at is not None and time.monotonic() >= self._at

    def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`, cut short by the deadline (even one set meanwhile); True if it passed."""
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if self._at is not None and now >= self._at:
                return True
            if now >= end:
                return False
            wait = end - now if self._at is None else min(end, self._at) - now
            if self._changed.wait(wait):
                self._changed.clear()


class SinkEvents(Protocol):
    """Operational events a sink reports; the daemon's implementation logs and counts each one."""

    def put_requested(self, *, result: str, records: int, accepted: int, latency_s: float | None) -> None:
        """One request ended with `result` (success, partial, throttled, ...): `accepted` of its `records`
        entries were taken. `latency_s` is None when nothing was sent (the client refused to build it)."""
        ...

    def put_failed(self, *, code: str, records: int, detail: str) -> None:
        """`records` entries were not accepted, with `code`: the whole request's error, or their own."""
        ...

    def records_retried(self, *, records: int, attempt: int, delay_s: float, reason: str) -> None:
        """`records` entries will be sent again after `delay_s`."""
        ...

    def sink_health(self, *, healthy: bool, reason: str, detail: str) -> None:
        """The destination turned unusable (`reason`: the error code; records are held) or usable again."""
        ...

    def sink_error(self, stage: str, error: BaseException, records: int) -> None:
        """The sink broke its own contract at `stage` (raised, or reported entries wrongly)."""
        ...

    def requests_in_flight(self, *, count: int) -> None:
        """Requests on the wire right now (call when it changes)."""
        ...

    def shard_throttled(self, *, shard_id: str, records: int) -> None:
        """`records` entries bound for `shard_id` were refused with a throttling code."""
        ...

    def shard_map_refreshed(self, *, shards: int, reason: str, changed: bool) -> None:
        """The sink listed its destination's partitions again (`reason`: start, periodic, misroute, ...)."""
        ...

    def records_aggregated(self, *, user_records: int, kinesis_records: int) -> None:
        """A request carried `user_records` packed into `kinesis_records` destination records."""
        ...

    def records_settled(self, *, attempts: Mapping[int, int]) -> None:
        """attempts -> how many records reached their end after that many attempts."""
        ...

    def records_misrouted(self, *, records: int, shard_id: str, detail: str) -> None:
        """Entries landed on another partition than the sink's map said (the map is stale)."""
        ...

    def duplicates_possible(self, *, records: int, reason: str) -> None:
        """Records sent again after an answer was lost: the destination may hold them twice."""
        ...


class SinkThreadDied(Exception):
    """A sink's own thread ended with an exception (a bug): raised to the daemon from submit or finish, which
    stops the daemon loudly (fatal) instead of letting delivery stall in silence."""


class SinkUnavailable(Exception):
    """Raised by `Sink.check` when the destination cannot take records; the message names it and says why."""


class SinkConfig(BaseModel):
    """Fields every sink has. Subclasses add their own and set `type` to a `Literal` of their name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str | None = Field(default=None, description="Name used in logs and metrics (default: the type).")


class Sink(ABC, Generic[E]):
    """A destination for records: prepared one by one, delivered as the sink sees fit."""

    config_model: ClassVar[type[SinkConfig]]

    def __init__(self, config: SinkConfig, events: SinkEvents) -> None:
        self.config = config
        self.events = events

    @abstractmethod
    def prepare(self, record: Record) -> E:
        """Encode one record; raise `RecordRejected` when the destination can never take it.

        Must be a pure function of `record` and the sink's config, and thread-safe: the daemon calls it
        from each source's thread as the record is emitted. Read `record.event` here only; it is gone
        (None) by the time the entry is submitted.
        """

    @abstractmethod
    def start(self, completion: Completion[E]) -> None:
        """Start delivering: called once, before the first `submit`; `completion` hears every entry's end."""

    @abstractmethod
    def submit(self, entries: Sequence[E], deadline: Deadline) -> int:
        """Take `entries` (in order) for delivery; blocks while the sink holds as much as it may.

        Returns how many it took: all of them, unless `deadline` passed while waiting for room (the
        daemon accounts the rest as unsent). Never raises for delivery failures.
        """

    @abstractmethod
    def finish(self, deadline: Deadline) -> None:
        """No `submit` follows. Deliver what is held until `deadline`, report what is left as unsent, and
        return once every submitted entry was reported through the completion exactly once."""

    def check(self) -> None:
        """Verify before any data flows that the destination exists and accepts this sink's writes.

        Raises `SinkUnavailable` naming the destination and the error; the daemon then fails start-up.
        The default checks nothing.
        """

    def destination(self) -> str | None:
        """Names the destination this very sink writes to (after `check`), so a checkpoint saved while writing
        elsewhere is known as foreign: a stream's ARN and creation time, say. None: the sink cannot tell."""
        return None

    def close(self) -> None:
        """Release connections; called once after the last write."""


SINK_TYPES: dict[str, type[Sink[Any]]] = {}

K = TypeVar("K", bound=type[Sink[Any]])


def register_sink(cls: K) -> K:
    """Register a sink class under the `type:` literal of its config model."""
    type_name = cls.config_model.model_fields["type"].default
    if not isinstance(type_name, str) or not type_name:
        raise TypeError(f"{cls.__name__}.config_model must give `type` a default literal name")
    SINK_TYPES[type_name] = cls
    return cls
