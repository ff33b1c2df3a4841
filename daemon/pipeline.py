"""The record path's middle: source contexts feeding the buffer, and the worker feeding the sink, whose
completion path (daemon/delivery.py `Delivery`) reports each record's end.

Every record a source hands over is counted received before it can reach the worker; sent and
dead-lettered records are acknowledged to their source (by the token it gave).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.delivery import (
    COMPONENT_DEAD_LETTER,
    COMPONENT_SINK_WORKER,
    REASON_UNSENT_AT_SHUTDOWN,
    Delivery,
    FatalStop,
    Outcomes,
    SinkResultInconsistent,
    last_resort,
)
from daemon.progress import ProgressWindow
from daemon.telemetry import Telemetry
from daemon.transforms import REASON_TRANSFORM_FAILED, Chain, TransformFailed
from sinks.base import Deadline, Entry, Record, RecordRejected, Sink
from sinks.batch import REASON_SINK_ERROR, REASON_SINK_LOST_TRACK

__all__ = [
    "COMPONENT_DEAD_LETTER",
    "COMPONENT_SINK_WORKER",
    "REASON_SINK_ERROR",
    "REASON_SINK_LOST_TRACK",
    "REASON_UNSENT_AT_SHUTDOWN",
    "Delivery",
    "FatalStop",
    "SinkResultInconsistent",
    "SinkWorker",
    "SourceContext",
]

# How long the worker waits for a first record before re-checking whether it should stop.
_IDLE_POLL_S = 0.2
# Entries moved from the buffer into the sink at once: one lock round per chunk, not per record.
_SUBMIT_CHUNK = 500
# How long the worker lets a chunk gather once a first entry is in: small against the sink's own linger,
# long enough that a fast source is moved in chunks rather than record by record.
_SUBMIT_FILL_S = 0.005
UNSENT_DETAIL = "not delivered before the shutdown deadline"


class SourceContext:
    """What a running source is handed: emit into the buffer (prepared by the sink), reject into the dead-letter file.

    With a `window` (a source with a checkpoint, or the feeder of a spool), each `(key, position)` token is
    numbered in it and the number travels with the record; a record that is done at once (rejected input, or
    refused by the sink's `prepare`) is acknowledged here, once it is in the dead-letter file.
    """

    def __init__(
        self,
        name: str,
        buffer: RecordBuffer,
        telemetry: Telemetry,
        dead_letters: DeadLetterFile,
        stopping: threading.Event,
        sink: Sink[Any],
        fatal: FatalStop | None = None,
        window: ProgressWindow | None = None,
        keeping: AbstractSet[str] = frozenset(),
        give_up: threading.Event | None = None,
        transform: Chain | None = None,
    ) -> None:
        self._name = name
        self._buffer = buffer
        self._telemetry = telemetry
        self._stopping = stopping
        # When a record waiting for room in a full buffer is given up (unsent): at once at shutdown, but a source
        # a reload stops gets room as the sink drains, and gives up only once it is abandoned.
        self._give_up = give_up or stopping
        self._sink = sink
        self._fatal = fatal or FatalStop(telemetry)
        self._outcomes = Outcomes(telemetry, dead_letters, self._fatal, keeping)
        self._closed = False
        self._received = telemetry.received_tally(name)
        self._filtered = telemetry.filtered_tally(name)
        self.window = window
        # The source's `transforms:` (None: records go as the source read them). A spooled source applies it
        # before the spool (SpoolingContext.emit); `forward` then only reads the partition key.
        self.transform = transform

    @property
    def name(self) -> str:
        return self._name

    @property
    def stopping(self) -> bool:
        return self._closed or self._stopping.is_set()

    @property
    def stopping_event(self) -> threading.Event:
        return self._stopping

    @property
    def give_up_event(self) -> threading.Event:
        return self._give_up

    @property
    def fatal(self) -> FatalStop:
        return self._fatal

    def close(self) -> None:
        """The daemon gave up waiting for this source: whatever it hands over from now on is refused, and a record
        it is waiting to put into a full buffer (or spool) is given up."""
        self._closed = True
        self._give_up.set()

    def count_received(self, records: int = 1) -> None:
        """Records that entered the daemon elsewhere (a spool) before they reach `forward`."""
        self._received.add(records)

    def transform_for_spool(self, data: bytes, event: Any, origin: str) -> tuple[bytes, Any] | None:
        """A spooled source's record through its transforms before the spool: the bytes and object to spool, or None
        when it ended here - filtered out (counted received and filtered) or dead-lettered (`transform_failed`).
        Its partition key is read as it leaves the spool (`forward`)."""
        chain = self.transform
        if chain is None:
            return data, event
        try:
            result = chain.apply(data, event, keyed=False)
        except TransformFailed as failed:
            self.reject(data, origin, REASON_TRANSFORM_FAILED, failed.detail)
            return None
        if result is None:
            self._received.add()
            self._filtered.add()
            return None
        return result[0], result[1]

    def emit(self, data: bytes, event: Any, origin: str, token: Any = None) -> bool:
        return self._take(data, event, origin, token, True)

    def forward(self, data: bytes, event: Any, origin: str, token: Any) -> bool:
        """`emit` for a record already counted received (by the spool that held it)."""
        return self._take(data, event, origin, token, False)

    def _take(self, data: bytes, event: Any, origin: str, token: Any, count: bool) -> bool:
        if self._closed or self._stopping.is_set():
            return False  # not taken, not counted: the source keeps it
        window = self.window
        number = window.emitted(token[0], token[1]) if window is not None and token is not None else None
        record = Record(data, event, self._name, origin, number)
        counted = not count
        try:
            if count:
                # Counted before the worker can see it, so no scrape ever shows more sent than received.
                self._received.add()
                counted = True
            if self.transform is not None and not self._transformed(record, count):
                return True  # filtered out or dead-lettered: done here
            entry = self._prepare(record)
            if entry is None:
                return True
            record.event = None  # the buffer holds bytes, not the parsed tree (max_bytes bounds memory)
            if self._buffer.put(entry, self._give_up):
                return True
            self._outcomes.unsent([record], "the daemon stopped before this record reached the buffer")
            return False
        except Exception as exc:  # noqa: BLE001 - a daemon part failed (telemetry): fatal, not a source crash
            self._fail(exc, record if counted else None)
            return False

    def reject(self, data: bytes, origin: str, reason: str, detail: str, token: Any = None) -> None:
        if self._closed:
            self._telemetry.input_refused(self._name, origin, reason)
            return
        window = self.window
        number = window.emitted(token[0], token[1]) if window is not None and token is not None else None
        record = Record(data, None, self._name, origin, number)
        counted = False
        try:
            self._telemetry.record_received(self._name)
            counted = True
            self._outcomes.dead_letter_soon(record, reason, detail, self._when_synced(record))
        except Exception as exc:  # noqa: BLE001 - see emit
            self._fail(exc, record if counted else None)

    def wait(self, seconds: float) -> bool:
        return self._stopping.wait(seconds) or self._closed

    def connection(self, connected: bool, detail: str = "") -> None:
        self._telemetry.source_connection(self._name, connected, detail)

    def reconnecting(self, reason: str, delay_s: float, detail: str = "") -> None:
        self._telemetry.source_reconnecting(self._name, reason, delay_s, detail)

    def protocol_message(self, kind: str, detail: str) -> None:
        self._telemetry.source_protocol_message(self._name, kind, detail)

    def _when_synced(self, record: Record) -> Callable[[], None] | None:
        """What acknowledges `record` once the dead-letter file holding it was fsynced (None: no checkpoint)."""
        window, number = self.window, record.token
        if window is None or number is None:
            return None
        return lambda: window.acknowledged((number,))

    def _transformed(self, record: Record, whole: bool) -> bool:
        """Run the transforms on `record` (only the partition key for a spooled one, `whole` False: its steps ran
        before the spool); False when the record ended here, filtered out (acknowledged at once) or dead-lettered."""
        chain = self.transform
        assert chain is not None  # the caller checked
        try:
            if not whole:
                record.partition_key = chain.key_of(record.event)
                return True
            result = chain.apply(record.data, record.event)
        except TransformFailed as failed:
            self._outcomes.dead_letter_soon(record, REASON_TRANSFORM_FAILED, failed.detail, self._when_synced(record))
            return False
        if result is None:
            self._filtered.add()
            if self.window is not None and record.token is not None:
                self.window.acknowledged((record.token,))  # like a delivered record: a restart reads past it
            return False
        record.data, record.event, record.partition_key = result
        return True

    def _prepare(self, record: Record) -> Any:
        """The sink's entry for `record`, or None when it was dead-lettered instead."""
        try:
            return self._sink.prepare(record)
        except RecordRejected as rejected:
            reason, detail = rejected.reason, rejected.detail
        except Exception as exc:  # noqa: BLE001 - a sink bug must cost one record, not the source
            self._telemetry.sink_error("prepare", exc, records=1)
            reason, detail = REASON_SINK_ERROR, f"prepare raised {type(exc).__name__}: {exc}"
        self._outcomes.dead_letter_soon(record, reason, detail, self._when_synced(record))
        return None

    def _fail(self, error: Exception, record: Record | None) -> None:
        self._fatal.trigger(f"source {self._name}", error)
        if record is not None:
            try:
                self._telemetry.records_lost([(record.source, record.origin)], why=f"{type(error).__name__}: {error}")
            except Exception:  # noqa: BLE001 - telemetry is what failed
                last_resort(f"records_lost source={record.source} origin={record.origin}")


class SinkWorker:
    """Moves prepared entries from the buffer into the sink, in chunks; the sink reports their ends to `delivery`."""

    def __init__(
        self,
        sink: Sink[Any],
        buffer: RecordBuffer,
        telemetry: Telemetry,
        dead_letters: DeadLetterFile,
        fatal: FatalStop | None = None,
        acknowledge: Callable[[str, list[Any]], None] | None = None,
        keeping: AbstractSet[str] = frozenset(),
    ) -> None:
        self.sink = sink
        self.buffer = buffer
        self.telemetry = telemetry
        self.fatal = fatal or FatalStop(telemetry)
        self._outcomes = Outcomes(telemetry, dead_letters, self.fatal, keeping)
        self.delivery = Delivery(telemetry, self._outcomes, self.fatal, acknowledge)
        self.deadline = Deadline()
        self._closing = threading.Event()
        self._started = False
        self._swap: SinkSwap | None = None
        self.heartbeat = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="sink-worker", daemon=True)

    @property
    def closing(self) -> bool:
        """True once `finish` was called: from then on the thread is meant to end."""
        return self._closing.is_set()

    def start(self) -> None:
        self.sink.start(self.delivery)
        self._started = True
        self.thread.start()

    def swap_sink(self, sink: Sink[Any], deadline_s: float) -> SinkSwap:
        """Hand over to `sink` (a reload changed it): with no source running, the worker moves what is buffered into
        the old sink, which finishes within `deadline_s`, then starts `sink` and goes on with it. Wait on the
        returned swap's `done`."""
        swap = SinkSwap(sink, Deadline(time.monotonic() + deadline_s))
        self._swap = swap
        return swap

    def finish(self, deadline_s: float) -> None:
        """No more records will arrive: deliver what is buffered within `deadline_s`, then return."""
        self.deadline.set(time.monotonic() + deadline_s)
        self._closing.set()
        self.buffer.close()
        # The deadline cuts every wait short; only a request already on the wire can outlast it.
        if self.thread.ident is not None:
            self.thread.join()
        # A worker that died early left what was put after it died; the buffer is closed now, so this is all.
        self._settle(self.buffer.drain(), UNSENT_DETAIL)

    def _run(self) -> None:
        try:
            while True:
                self.heartbeat = time.monotonic()  # the loop turned (read by the systemd watchdog)
                if self._swap is not None:
                    self._hand_over(self._swap)
                closing = self._closing.is_set()
                if closing:
                    entries = self.buffer.get_many(_SUBMIT_CHUNK, 0.0)
                else:
                    entries = self.buffer.get_many(_SUBMIT_CHUNK, _IDLE_POLL_S, _SUBMIT_FILL_S)
                if entries:
                    self._submit(entries)
                elif closing:
                    break
            self.sink.finish(self.deadline)
        except BaseException as exc:  # noqa: BLE001 - a bug here must stop the daemon loudly, never silently
            self.fatal.trigger(COMPONENT_SINK_WORKER, exc)
            self._finish_sink_after_failure()
        finally:
            self.delivery.abandon("the sink never reported what became of this record")
            self._settle(self.buffer.drain(), UNSENT_DETAIL)

    def _hand_over(self, swap: SinkSwap) -> None:
        try:
            while entries := self.buffer.get_many(_SUBMIT_CHUNK, 0.0):
                self._submit(entries, swap.deadline)
            self.sink.finish(swap.deadline)
            swap.sink.start(self.delivery)
            swap.old, self.sink = self.sink, swap.sink
        finally:
            self._swap = None
            swap.done.set()

    def _submit(self, entries: list[Entry], deadline: Deadline | None = None) -> None:
        self.delivery.track(entries)
        taken = self.sink.submit(entries, deadline or self.deadline)
        if taken < len(entries):  # the deadline passed while the sink was full
            rest = entries[taken:]
            self.delivery.untrack(rest)
            self._settle(rest, UNSENT_DETAIL)
        self.telemetry.buffer_level(len(self.buffer), self.buffer.size_bytes)

    def _finish_sink_after_failure(self) -> None:
        """Let the sink report what it holds before the leftovers are accounted; a sink that fails here too is
        past helping, and `abandon` accounts what it held."""
        try:
            self.sink.finish(self.deadline)
        except BaseException as exc:  # noqa: BLE001 - see _run
            self.fatal.trigger(COMPONENT_SINK_WORKER, exc)

    def _settle(self, entries: list[Entry], detail: str) -> None:
        if not entries:
            return
        try:
            self._outcomes.unsent((e.record for e in entries), detail)
            self.telemetry.buffer_level(len(self.buffer), self.buffer.size_bytes)
        except Exception as exc:  # noqa: BLE001 - telemetry broke while settling: say so, with the origins
            self.fatal.trigger(COMPONENT_SINK_WORKER, exc)
            last_resort(f"records_lost origins={[e.record.origin for e in entries]}")


class SinkSwap:
    """A hand-over from the worker's sink to `sink`; `old` is the sink it replaced once `done` is set (None: it
    failed, and the worker stopped fatally)."""

    def __init__(self, sink: Sink[Any], deadline: Deadline) -> None:
        self.sink = sink
        self.deadline = deadline
        self.old: Sink[Any] | None = None
        self.done = threading.Event()
