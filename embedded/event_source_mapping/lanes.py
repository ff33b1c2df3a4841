"""One lane of a shard: collects batches and delivers them until each record succeeded or was sent on.

A shard has `parallelization_factor` lanes; records of one partition key always go to the same lane, and a
lane has one batch in flight at a time, so a key's records are never processed concurrently or out of order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from embedded.event_source_mapping.checkpoints import ShardProgress
from embedded.event_source_mapping.events import (
    CONDITION_RECORD_AGE_EXCEEDED,
    CONDITION_RETRIES_EXHAUSTED,
    EventSource,
    StreamRecord,
)
from embedded.event_source_mapping.invocation import INVOKE_PAYLOAD_LIMIT_BYTES, Invoker, event_record_bytes
from embedded.event_source_mapping.stats import StatsRecorder
from infra.settings import EventSourceMappingSettings

# Records read ahead per lane before the reader waits: bounds memory when the function is slow.
LANE_BACKLOG_RECORDS = 20_000
# -1 in Lambda's MaximumRetryAttempts / MaximumRecordAgeInSeconds means "no limit".
UNLIMITED = -1


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff: base, 2 x base, 4 x base ... up to cap (attempt counts from 1)."""
    return float(min(cap_s, base_s * 2 ** max(0, attempt - 1)))


class _Stopped(Exception):
    """The runner stopped while a step was being retried."""


@dataclass
class _Part:
    """Records still to deliver from one batch, with what they went through so far."""

    records: list[StreamRecord]
    retries: int = 0  # retries consumed; splitting a batch does not consume any, as in Lambda
    invocations: int = 0  # invocations that included these records (approximateInvokeCount)
    last_error: str | None = None


@dataclass(frozen=True)
class LaneTiming:
    idle_poll_s: float
    retry_backoff_base_s: float
    retry_backoff_cap_s: float


class Lane:
    """A queue of a shard's records (one partition-key group) and the thread that delivers them in batches."""

    def __init__(
        self,
        *,
        shard_id: str,
        settings: EventSourceMappingSettings,
        invoker: Invoker,
        source: EventSource,
        function_arn: str,
        on_failure: Callable[[dict[str, Any]], None],
        progress: ShardProgress,
        stats: StatsRecorder,
        stopping: threading.Event,
        timing: LaneTiming,
        clock: Callable[[], float],
        log: Any,
    ) -> None:
        self.shard_id = shard_id
        self._settings = settings
        self._invoker = invoker
        self._source = source
        self._function_arn = function_arn
        self._on_failure = on_failure
        self._progress = progress
        self._stats = stats
        self._stopping = stopping
        self._timing = timing
        self._clock = clock
        self._log = log
        self._ready = threading.Condition()  # guards _buffer and _closed
        self._buffer: deque[StreamRecord] = deque()
        self._closed = False
        self._parts: deque[_Part] = deque()  # the batch in flight, as parts still to deliver

    # --- fed by the shard's reader ----------------------------------------------------------------

    def offer(self, records: list[StreamRecord]) -> bool:
        """Queue one GetRecords response's records for this lane at once (so a batch can take them all),
        waiting while the lane's backlog is full; False when the runner stops first."""
        with self._ready:
            while len(self._buffer) >= LANE_BACKLOG_RECORDS:
                if self._stopping.is_set():
                    return False
                self._ready.wait(self._timing.idle_poll_s)
            self._buffer.extend(records)
            self._ready.notify_all()
        return True

    def close(self) -> None:
        """The reader will add nothing more (the shard is closed, or the runner stops)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    # --- the lane's thread ------------------------------------------------------------------------

    def run(self) -> None:
        """Deliver batches until the shard ended and everything was delivered, or the runner stops."""
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self._parts:
                    batch = self._collect()
                    if batch is None:
                        return  # shard closed and drained
                    if not batch or self._stopping.is_set():
                        continue  # a collected batch is not in flight yet: on stop it stays unfinished
                    self._parts.append(_Part(batch))
                self._deliver()
                failures = 0
            except _Stopped:
                return
            except Exception as exc:  # noqa: BLE001 - a bug here must not kill the lane: log, back off, go on
                failures += 1
                self._stats.add(internal_errors=1)
                self._log.error("esm_lane_error", shard=self.shard_id, error=f"{type(exc).__name__}: {exc}", exc_info=True)
                self._stopping.wait(backoff_delay(failures, self._timing.retry_backoff_base_s, self._timing.retry_backoff_cap_s))

    def _take(self, batch: list[StreamRecord], size: int, timeout: float) -> tuple[int, bool]:
        """Move queued records into `batch` within BatchSize and the payload limit, waiting up to `timeout`
        for the first; returns the batch's payload size and whether the batch is full."""
        with self._ready:
            if not self._buffer and timeout > 0 and not self._closed:
                self._ready.wait(timeout)
            while self._buffer and len(batch) < self._settings.batch_size:
                record_size = event_record_bytes(self._buffer[0])
                if batch and size + record_size > INVOKE_PAYLOAD_LIMIT_BYTES:
                    return size, True
                batch.append(self._buffer.popleft())
                size += record_size
            self._ready.notify_all()  # room for the reader again
            return size, len(batch) >= self._settings.batch_size

    def _drained(self) -> bool:
        with self._ready:
            return self._closed and not self._buffer

    def _collect(self) -> list[StreamRecord] | None:
        """Up to BatchSize records within the invocation payload limit, waiting at most the batching window
        after the first one; [] when stopping; None when the shard is closed and the lane drained."""
        batch: list[StreamRecord] = []
        size = 0
        while not batch:
            if self._stopping.is_set():
                return []
            if self._drained():
                return None
            size, full = self._take(batch, size, self._timing.idle_poll_s)
        window_ends = time.monotonic() + self._settings.maximum_batching_window_seconds
        while not full and not self._stopping.is_set() and not self._drained():
            remaining = window_ends - time.monotonic()
            if remaining <= 0:
                break
            # Slices of the idle poll keep stop() responsive while the window is open.
            size, full = self._take(batch, size, min(remaining, self._timing.idle_poll_s))
        return batch

    def _deliver(self) -> None:
        """Work through the parts of the batch in flight until none is left or the runner stops."""
        settings = self._settings
        while self._parts and not self._stopping.is_set():
            part = self._parts[0]
            expired = self._expired(part.records)
            if expired:
                self._send_on_failure(part, part.records[:expired], CONDITION_RECORD_AGE_EXCEEDED)
                part.records = part.records[expired:]
                if not part.records:
                    self._parts.popleft()
                continue
            outcome = self._invoker.invoke(self.shard_id, part.records)
            part.invocations += 1
            if outcome.first_failed is None:
                self._succeeded(part.records)
                self._parts.popleft()
                continue
            self._succeeded(part.records[: outcome.first_failed])
            part.records = part.records[outcome.first_failed :]
            part.last_error = outcome.function_error
            if outcome.function_error and settings.bisect_batch_on_function_error and len(part.records) > 1:
                middle = len(part.records) // 2
                halves = [_Part(part.records[:middle]), _Part(part.records[middle:])]
                for half in halves:
                    half.retries, half.invocations, half.last_error = part.retries, part.invocations, part.last_error
                self._parts.popleft()
                self._parts.extendleft(reversed(halves))
                continue
            if outcome.first_failed > 0 and settings.bisect_batch_on_function_error:
                continue  # split at the returned sequence number: the rest is retried without using a retry
            if settings.maximum_retry_attempts != UNLIMITED and part.retries >= settings.maximum_retry_attempts:
                self._send_on_failure(part, part.records, CONDITION_RETRIES_EXHAUSTED)
                self._parts.popleft()
                continue
            part.retries += 1
            self._stopping.wait(backoff_delay(part.retries, self._timing.retry_backoff_base_s, self._timing.retry_backoff_cap_s))

    def _expired(self, records: list[StreamRecord]) -> int:
        """How many leading records are older than MaximumRecordAgeInSeconds (Lambda never sends those)."""
        max_age = self._settings.maximum_record_age_seconds
        if max_age == UNLIMITED:
            return 0
        now = self._clock()
        count = 0
        for record in records:
            if now - record.arrival <= max_age:
                break
            count += 1
        return count

    def _succeeded(self, records: list[StreamRecord]) -> None:
        if records:
            self._stats.add(records_succeeded=len(records))
            self._progress.done([r.sequence_number for r in records])

    def _send_on_failure(self, part: _Part, records: list[StreamRecord], condition: str) -> None:
        """Send the batch's metadata to the on-failure destination, retrying until it takes it or we stop.

        The records count as done only once the destination accepted them: if the runner stops first they
        stay behind the checkpoint, unfinished, rather than lost.
        """
        failure = self._source.on_failure(
            self.shard_id, records, condition, part.invocations, self._function_arn, part.last_error or ""
        )
        if part.last_error is None:
            failure["responseContext"].pop("functionError")  # no function error: a partial or invalid response
        attempt = 0
        while True:
            try:
                self._on_failure(failure)
                break
            except Exception as exc:  # the destination failing must not stop the shard silently
                attempt += 1
                self._stats.add(on_failure_errors=1)
                self._log.error(
                    "esm_on_failure_destination_failed",
                    shard=self.shard_id,
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
                    failure=failure,
                )
                delay = backoff_delay(attempt, self._timing.retry_backoff_base_s, self._timing.retry_backoff_cap_s)
                if self._stopping.wait(delay):
                    raise _Stopped from exc
        self._stats.add(batches_sent_to_on_failure=1, records_sent_to_on_failure=len(records))
        self._log.error(
            "esm_batch_sent_to_on_failure",
            shard=self.shard_id,
            condition=condition,
            records=len(records),
            first=records[0].sequence_number,
            last=records[-1].sequence_number,
        )
        self._progress.done([r.sequence_number for r in records])
