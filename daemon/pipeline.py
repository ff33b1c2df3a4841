"""The record path's middle: source contexts feeding the buffer, and the worker batching it into the sink.

Every record a source hands over is accounted exactly once: sent, dead-lettered (with a reason), or
unsent at shutdown. The worker checks that a sink's `WriteResult` covers every entry it was given.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.telemetry import Telemetry
from sinks.base import Deadline, Entry, Record, RecordRejected, Sink, WriteResult

# How long the worker waits for a first record before re-checking whether it should stop.
_IDLE_POLL_S = 0.2
REASON_UNSENT_AT_SHUTDOWN = "unsent_at_shutdown"
REASON_SINK_LOST_TRACK = "sink_result_incomplete"
REASON_SINK_ERROR = "sink_error"


class SourceContext:
    """What a running source is handed: emit into the buffer, reject into the dead-letter file."""

    def __init__(
        self, name: str, buffer: RecordBuffer, telemetry: Telemetry, dead_letters: DeadLetterFile, stopping: threading.Event
    ) -> None:
        self._name = name
        self._buffer = buffer
        self._telemetry = telemetry
        self._dead_letters = dead_letters
        self._stopping = stopping

    @property
    def name(self) -> str:
        return self._name

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def emit(self, data: bytes, event: Any, origin: str) -> bool:
        if not self._buffer.put(Record(data, event, self._name, origin), self._stopping):
            return False
        self._telemetry.record_received(self._name)
        return True

    def reject(self, data: bytes, origin: str, reason: str, detail: str) -> None:
        self._telemetry.record_received(self._name)
        self._dead_letters.write(data=data, source=self._name, origin=origin, reason=reason, detail=detail)
        self._telemetry.record_dead_lettered(self._name, origin, reason, detail)

    def wait(self, seconds: float) -> bool:
        return self._stopping.wait(seconds)


class SinkWorker:
    """Takes records off the buffer, batches them within the sink's limits and accounts each result."""

    def __init__(self, sink: Sink[Any], buffer: RecordBuffer, telemetry: Telemetry, dead_letters: DeadLetterFile) -> None:
        self.sink = sink
        self.buffer = buffer
        self.telemetry = telemetry
        self.dead_letters = dead_letters
        self.deadline = Deadline()
        self._closing = threading.Event()
        self._carry: Entry | None = None
        self._thread = threading.Thread(target=self._run, name="sink-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def finish(self, deadline_s: float) -> None:
        """No more records will arrive: deliver what is buffered within `deadline_s`, then return."""
        self.deadline.set(time.monotonic() + deadline_s)
        self._closing.set()
        # The deadline cuts every retry sleep short; only a request already on the wire can outlast it.
        self._thread.join()

    def _run(self) -> None:
        try:
            while not self.deadline.expired():
                batch = self._collect()
                if batch:
                    self._write(batch)
                elif self._closing.is_set() and not len(self.buffer):
                    break
        finally:
            leftovers = [self._carry.record] if self._carry is not None else []
            self._carry = None
            self._account_unsent(leftovers + self.buffer.drain())
            self.telemetry.buffer_level(0, 0)

    def _collect(self) -> list[Entry]:
        limits = self.sink.limits
        batch: list[Entry] = []
        size = 0
        started = 0.0
        if self._carry is not None:
            batch, size, started = [self._carry], self._carry.size, time.monotonic()
            self._carry = None
        while len(batch) < limits.max_records:
            if self._closing.is_set():
                wait = 0.0  # shutting down: flush what is there, don't linger
            elif batch:
                wait = max(0.0, started + limits.linger_s - time.monotonic())
            else:
                wait = _IDLE_POLL_S
            record = self.buffer.get(wait)
            if record is None:
                break
            try:
                entry = self.sink.prepare(record)
            except RecordRejected as rejected:
                self._dead_letter(record, rejected.reason, rejected.detail)
                continue
            except Exception as exc:  # noqa: BLE001 - a sink bug must cost one record, not the worker thread
                self.telemetry.sink_error("prepare", exc, records=1)
                self._dead_letter(record, REASON_SINK_ERROR, f"prepare raised {type(exc).__name__}: {exc}")
                continue
            if batch and size + entry.size > limits.max_bytes:
                self._carry = entry
                break
            if not batch:
                started = time.monotonic()
            batch.append(entry)
            size += entry.size
        self.telemetry.buffer_level(len(self.buffer), self.buffer.size_bytes)
        return batch

    def _write(self, batch: list[Entry]) -> None:
        try:
            result: WriteResult[Entry] = self.sink.write(batch, self.deadline)
        except Exception as exc:  # noqa: BLE001 - the contract says write never raises; if it does, keep the records
            self.telemetry.sink_error("write", exc, records=len(batch))
            detail = f"write raised {type(exc).__name__}: {exc}"
            result = WriteResult(failed=[(entry, REASON_SINK_ERROR, detail) for entry in batch])
        if result.sent:
            self.telemetry.records_sent(Counter(e.record.source for e in result.sent), len(batch))
        for entry, reason, detail in result.failed:
            self._dead_letter(entry.record, reason, detail)
        accounted = {id(e) for e in (*result.sent, *(f[0] for f in result.failed), *result.unsent)}
        for entry in (e for e in batch if id(e) not in accounted):
            self._dead_letter(entry.record, REASON_SINK_LOST_TRACK, "the sink's result did not mention this record")
        self._account_unsent([e.record for e in result.unsent])

    def _dead_letter(self, record: Record, reason: str, detail: str) -> None:
        self.dead_letters.write(data=record.data, source=record.source, origin=record.origin, reason=reason, detail=detail)
        self.telemetry.record_dead_lettered(record.source, record.origin, reason, detail)

    def _account_unsent(self, records: list[Record]) -> None:
        """Unsent records are kept in the dead-letter file for replay, but counted as unsent, not dead."""
        if not records:
            return
        for record in records:
            self.dead_letters.write(
                data=record.data,
                source=record.source,
                origin=record.origin,
                reason=REASON_UNSENT_AT_SHUTDOWN,
                detail="not delivered before the shutdown deadline",
            )
        self.telemetry.records_unsent(Counter(r.source for r in records))
