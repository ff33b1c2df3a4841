"""The record path's middle: source contexts feeding the buffer, and the worker batching it into the sink.

Every record a source hands over is counted received before it can reach the worker, then ends exactly
once: sent, dead-lettered (with a reason), unsent at shutdown, or - only when the dead-letter file itself
failed - lost (logged with its origin). The worker checks that a sink's `WriteResult` names every entry of
the batch exactly once. A failure of the daemon's own parts (the dead-letter file, telemetry, a bug in the
worker) is fatal: `FatalStop` logs it and wakes the main loop, which stops the daemon with a non-zero exit.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterClosed, DeadLetterFile, DeadLetterUnavailable
from daemon.telemetry import Telemetry
from sinks.base import Deadline, Entry, Record, RecordRejected, Sink, WriteResult

# How long the worker waits for a first record before re-checking whether it should stop.
_IDLE_POLL_S = 0.2
REASON_UNSENT_AT_SHUTDOWN = "unsent_at_shutdown"
REASON_SINK_LOST_TRACK = "sink_result_incomplete"
REASON_SINK_ERROR = "sink_error"
COMPONENT_DEAD_LETTER = "dead_letter_file"
COMPONENT_SINK_WORKER = "sink_worker"

E = TypeVar("E", bound=Entry)


class FatalStop:
    """The daemon's own failures: the first one per component is logged (`fatal_error`) and counted, and
    `wake` is set so the main loop stops the daemon and exits non-zero."""

    def __init__(self, telemetry: Telemetry, wake: threading.Event | None = None) -> None:
        self.telemetry = telemetry
        self.wake = wake or threading.Event()
        self._lock = threading.Lock()
        self.failures: list[tuple[str, BaseException]] = []

    @property
    def triggered(self) -> bool:
        return bool(self.failures)

    def trigger(self, component: str, error: BaseException) -> None:
        with self._lock:
            if any(seen == component for seen, _ in self.failures):
                return  # the same part failing again (each later write, say) adds nothing new
            self.failures.append((component, error))
        try:
            self.telemetry.fatal_error(component, error)
        except Exception:  # noqa: BLE001 - logging itself may be what broke: fall back to stderr
            _last_resort(f"fatal_error component={component} error={type(error).__name__}: {error}")
        self.wake.set()


def _last_resort(line: str) -> None:
    # If even stderr fails there is nothing left to report to; the exit code still says it.
    with contextlib.suppress(Exception):
        print(line, file=sys.stderr, flush=True)


class _Outcomes:
    """Ends records in the dead-letter file, or - when that file fails - as lost, logged and counted."""

    def __init__(self, telemetry: Telemetry, dead_letters: DeadLetterFile, fatal: FatalStop) -> None:
        self.telemetry = telemetry
        self.dead_letters = dead_letters
        self.fatal = fatal

    def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        self.dead_letter_many([(record, reason, detail)])

    def dead_letter_many(self, items: Iterable[tuple[Record, str, str]]) -> None:
        """Dead-letter each (record, reason, detail); those the file cannot take are lost together, in one log line."""
        for record, reason, detail in self._keep(items):
            self.telemetry.record_dead_lettered(record.source, record.origin, reason, detail)

    def unsent(self, records: Iterable[Record], detail: str) -> None:
        """Unsent records are kept in the dead-letter file for replay, but counted as unsent, not dead."""
        kept = Counter(record.source for record, _, _ in self._keep((r, REASON_UNSENT_AT_SHUTDOWN, detail) for r in records))
        if kept:
            self.telemetry.records_unsent(kept)

    def _keep(self, items: Iterable[tuple[Record, str, str]]) -> list[tuple[Record, str, str]]:
        """Write each item to the dead-letter file; returns those written. The rest are lost (and fatal)."""
        kept: list[tuple[Record, str, str]] = []
        lost: list[Record] = []
        failure: DeadLetterUnavailable | None = None
        for record, reason, detail in items:
            try:
                self.dead_letters.write(
                    data=record.data, source=record.source, origin=record.origin, reason=reason, detail=detail
                )
            except DeadLetterUnavailable as exc:
                lost.append(record)
                failure = exc
                continue
            kept.append((record, reason, detail))
        if failure is not None:
            self.lose(lost, failure)
        return kept

    def lose(self, records: list[Record], error: DeadLetterUnavailable) -> None:
        self.telemetry.records_lost([(r.source, r.origin) for r in records], why=f"{type(error).__name__}: {error}")
        if not isinstance(error, DeadLetterClosed):  # closed at shutdown: the daemon is already stopping
            self.fatal.trigger(COMPONENT_DEAD_LETTER, error)

class SourceContext:
    """What a running source is handed: emit into the buffer (prepared by the sink), reject into the dead-letter file."""

    def __init__(
        self,
        name: str,
        buffer: RecordBuffer,
        telemetry: Telemetry,
        dead_letters: DeadLetterFile,
        stopping: threading.Event,
        sink: Sink[Any],
        fatal: FatalStop | None = None,
    ) -> None:
        self._name = name
        self._buffer = buffer
        self._telemetry = telemetry
        self._stopping = stopping
        self._sink = sink
        self._fatal = fatal or FatalStop(telemetry)
        self._outcomes = _Outcomes(telemetry, dead_letters, self._fatal)
        self._closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def stopping(self) -> bool:
        return self._closed or self._stopping.is_set()

    def close(self) -> None:
        """The daemon gave up waiting for this source: whatever it hands over from now on is refused."""
        self._closed = True

    def emit(self, data: bytes, event: Any, origin: str) -> bool:
        if self.stopping:
            return False  # not taken, not counted: the source keeps it
        record = Record(data, event, self._name, origin)
        counted = False
        try:
            # Counted before the worker can see it, so no scrape ever shows more sent than received.
            self._telemetry.record_received(self._name)
            counted = True
            entry = self._prepare(record)
            if entry is None:
                return True
            record.event = None  # the buffer holds bytes, not the parsed tree (max_bytes bounds memory)
            if self._buffer.put(entry, self._stopping):
                return True
            self._outcomes.unsent([record], "the daemon stopped before this record reached the buffer")
            return False
        except Exception as exc:  # noqa: BLE001 - a daemon part failed (telemetry): fatal, not a source crash
            self._fail(exc, record if counted else None)
            return False

    def reject(self, data: bytes, origin: str, reason: str, detail: str) -> None:
        if self._closed:
            self._telemetry.input_refused(self._name, origin, reason)
            return
        record = Record(data, None, self._name, origin)
        counted = False
        try:
            self._telemetry.record_received(self._name)
            counted = True
            self._outcomes.dead_letter(record, reason, detail)
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

    def _prepare(self, record: Record) -> Any:
        """The sink's entry for `record`, or None when it was dead-lettered instead."""
        try:
            return self._sink.prepare(record)
        except RecordRejected as rejected:
            self._outcomes.dead_letter(record, rejected.reason, rejected.detail)
        except Exception as exc:  # noqa: BLE001 - a sink bug must cost one record, not the source
            self._telemetry.sink_error("prepare", exc, records=1)
            self._outcomes.dead_letter(record, REASON_SINK_ERROR, f"prepare raised {type(exc).__name__}: {exc}")
        return None

    def _fail(self, error: Exception, record: Record | None) -> None:
        self._fatal.trigger(f"source {self._name}", error)
        if record is not None:
            try:
                self._telemetry.records_lost([(record.source, record.origin)], why=f"{type(error).__name__}: {error}")
            except Exception:  # noqa: BLE001 - telemetry is what failed
                _last_resort(f"records_lost source={record.source} origin={record.origin}")


class SinkResultInconsistent(Exception):
    """A sink's WriteResult did not name each entry of its batch exactly once."""


@dataclass
class Reconciled(Generic[E]):
    """A WriteResult checked against its batch: each entry in exactly one outcome, and what was wrong."""

    sent: list[E] = field(default_factory=list)
    failed: list[tuple[E, str, str]] = field(default_factory=list)
    unsent: list[E] = field(default_factory=list)
    missing: list[E] = field(default_factory=list)
    problems: Counter[str] = field(default_factory=Counter)


def reconcile(batch: list[E], result: WriteResult[E]) -> Reconciled[E]:
    """Give every entry of `batch` one outcome. An entry named twice keeps the outcome that keeps its data
    (failed, then unsent, then sent): a record that may not have arrived is dead-lettered, not assumed sent."""
    members = {id(entry) for entry in batch}
    outcome: dict[int, str] = {}
    out: Reconciled[E] = Reconciled()

    def claim(entry: E, kind: str) -> bool:
        key = id(entry)
        if key not in members:
            out.problems[f"{kind} entry not in the batch"] += 1
            return False
        if key in outcome:
            first = outcome[key]
            out.problems[f"listed twice as {kind}" if first == kind else f"listed as {first} and {kind}"] += 1
            return False
        outcome[key] = kind
        return True

    out.failed = [item for item in result.failed if claim(item[0], "failed")]
    out.unsent = [entry for entry in result.unsent if claim(entry, "unsent")]
    out.sent = [entry for entry in result.sent if claim(entry, "sent")]
    out.missing = [entry for entry in batch if id(entry) not in outcome]
    if out.missing:
        out.problems["missing"] += len(out.missing)
    return out


class SinkWorker:
    """Takes prepared entries off the buffer, batches them within the sink's limits and accounts each result."""

    def __init__(
        self,
        sink: Sink[Any],
        buffer: RecordBuffer,
        telemetry: Telemetry,
        dead_letters: DeadLetterFile,
        fatal: FatalStop | None = None,
    ) -> None:
        self.sink = sink
        self.buffer = buffer
        self.telemetry = telemetry
        self.fatal = fatal or FatalStop(telemetry)
        self._outcomes = _Outcomes(telemetry, dead_letters, self.fatal)
        self.deadline = Deadline()
        self._closing = threading.Event()
        self._carry: Entry | None = None
        # Entries taken off the buffer and not yet accounted, by id: whatever a failure leaves here is unsent.
        self._in_hand: dict[int, Entry] = {}
        self.thread = threading.Thread(target=self._run, name="sink-worker", daemon=True)

    @property
    def closing(self) -> bool:
        """True once `finish` was called: from then on the thread is meant to end."""
        return self._closing.is_set()

    def start(self) -> None:
        self.thread.start()

    def finish(self, deadline_s: float) -> None:
        """No more records will arrive: deliver what is buffered within `deadline_s`, then return."""
        self.deadline.set(time.monotonic() + deadline_s)
        self._closing.set()
        self.buffer.close()
        # The deadline cuts every retry sleep short; only a request already on the wire can outlast it.
        if self.thread.ident is not None:
            self.thread.join()
        # A worker that died early left what was put after it died; the buffer is closed now, so this is all.
        self._settle(self.buffer.drain(), "not delivered before the shutdown deadline")

    def _run(self) -> None:
        try:
            while not self.deadline.expired():
                batch = self._collect()
                if batch:
                    self._write(batch)
                elif self._closing.is_set() and not len(self.buffer):
                    break
        except BaseException as exc:  # noqa: BLE001 - a bug here must stop the daemon loudly, never silently
            self.fatal.trigger(COMPONENT_SINK_WORKER, exc)
        finally:
            leftovers = [*self._in_hand.values()]
            self._in_hand.clear()
            self._carry = None
            self._settle(leftovers + self.buffer.drain(), "not delivered before the shutdown deadline")

    def _settle(self, entries: list[Entry], detail: str) -> None:
        try:
            self._outcomes.unsent((e.record for e in entries), detail)
            self.telemetry.buffer_level(len(self.buffer), self.buffer.size_bytes)
        except Exception as exc:  # noqa: BLE001 - telemetry broke while settling: say so, with the origins
            self.fatal.trigger(COMPONENT_SINK_WORKER, exc)
            _last_resort(f"records_lost origins={[e.record.origin for e in entries]}")

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
            entry = self.buffer.get(wait)
            if entry is None:
                break
            self._in_hand[id(entry)] = entry
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
        checked = reconcile(batch, result)
        if checked.problems:
            what = "; ".join(f"{count} {problem}" for problem, count in sorted(checked.problems.items()))
            self.telemetry.sink_error("result", SinkResultInconsistent(what), records=sum(checked.problems.values()))
        # Each entry leaves `_in_hand` only once accounted: if accounting raises midway, what is left is kept
        # as unsent (a record may then be both sent and in the dead-letter file, never in neither).
        if checked.sent:
            self.telemetry.records_sent(Counter(e.record.source for e in checked.sent), len(batch))
            self._release(checked.sent)
        missing = "the sink's result did not mention this record"
        dead = [*checked.failed, *((entry, REASON_SINK_LOST_TRACK, missing) for entry in checked.missing)]
        self._outcomes.dead_letter_many((entry.record, reason, detail) for entry, reason, detail in dead)
        self._release([entry for entry, _, _ in dead])
        self._outcomes.unsent((e.record for e in checked.unsent), "not delivered before the shutdown deadline")
        self._release(checked.unsent)

    def _release(self, entries: list[Entry]) -> None:
        """These entries are accounted: a later failure must not account them again."""
        for entry in entries:
            self._in_hand.pop(id(entry), None)
