"""`BatchSink`: the Sink contract for destinations written one batch at a time.

A subclass says how it batches (`limits`) and writes one batch (`write(batch, deadline) -> WriteResult`);
this class runs one thread that gathers submitted entries into batches (full, or `linger_s` old), writes
them one after another, checks each result names every entry of its batch exactly once (`reconcile`), and
reports each entry's end through the completion.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sinks.base import Completion, Deadline, Entry, Sink, SinkThreadDied

E = TypeVar("E", bound=Entry)

REASON_SINK_ERROR = "sink_error"
REASON_SINK_LOST_TRACK = "sink_result_incomplete"
# How long the batching thread waits for a first entry before re-checking whether it should stop.
_IDLE_POLL_S = 0.2
# Entries accepted ahead of the batch being written: one more batch's worth keeps the writer busy
# without holding much beyond the daemon's own buffer.
_INTAKE_BATCHES = 2
UNSENT_DETAIL = "not delivered before the shutdown deadline"


@dataclass(frozen=True)
class BatchLimits:
    """How entries are grouped: a batch is written when full or `linger_s` old."""

    max_records: int
    max_bytes: int
    linger_s: float


@dataclass
class WriteResult(Generic[E]):
    """What became of each entry of a batch. Every entry handed to `write` is in exactly one list, once."""

    sent: list[E] = field(default_factory=list)
    failed: list[tuple[E, str, str]] = field(default_factory=list)  # (entry, reason, detail): dead-letter
    unsent: list[E] = field(default_factory=list)  # not delivered before the deadline; not dead


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


class SinkResultInconsistent(Exception):
    """A sink's WriteResult did not name each entry of its batch exactly once."""


class BatchSink(Sink[E]):
    """A sink that writes one batch at a time; subclasses implement `limits` and `write`."""

    @property
    @abstractmethod
    def limits(self) -> BatchLimits: ...

    @abstractmethod
    def write(self, batch: list[E], deadline: Deadline) -> WriteResult[E]:
        """Deliver a batch, retrying as the destination allows, until `deadline` passes.

        Entries still undelivered when the deadline passes are returned as `unsent`. Sleeps between retries
        go through `deadline.sleep` so a shutdown cuts them short. Must not raise for delivery failures.
        """

    def start(self, completion: Completion[E]) -> None:
        self._completion = completion
        self._intake: deque[E] = deque()
        self._room = threading.Condition()
        self._finishing = False
        self._deadline = Deadline()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"sink-{type(self).__name__}", daemon=True)
        self._thread.start()

    def submit(self, entries: Sequence[E], deadline: Deadline) -> int:
        cap = self.limits.max_records * _INTAKE_BATCHES
        taken = 0
        with self._room:
            while taken < len(entries):
                room = cap - len(self._intake)
                if not self._thread.is_alive():
                    raise SinkThreadDied(f"{type(self).__name__}'s batching thread ended") from self._failure
                if room <= 0:
                    if deadline.expired():
                        break
                    remaining = deadline.remaining()
                    self._room.wait(_IDLE_POLL_S if remaining is None else min(remaining, _IDLE_POLL_S))
                    continue
                chunk = entries[taken : taken + room]
                self._intake.extend(chunk)
                taken += len(chunk)
                self._room.notify_all()
        return taken

    def finish(self, deadline: Deadline) -> None:
        if deadline.at is not None:
            self._deadline.set(deadline.at)  # wakes a write sleeping between retries
        with self._room:
            self._finishing = True
            self._room.notify_all()
        self._thread.join()
        with self._room:
            left = list(self._intake)
            self._intake.clear()
        if left:  # the thread died early (a bug surfaced by an exception): what it never took is unsent
            self._completion.unsent(left, UNSENT_DETAIL)
        if self._failure is not None:
            raise SinkThreadDied(f"{type(self).__name__}'s batching thread ended") from self._failure

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - kept for submit/finish to raise in the daemon's thread
            self._failure = exc

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            if batch:
                self._write(batch)
                continue
            with self._room:
                if self._finishing and not self._intake:
                    return

    def _collect(self) -> list[E]:
        limits = self.limits
        batch: list[E] = []
        size = 0
        with self._room:
            started = None
            while len(batch) < limits.max_records:
                if not self._intake:
                    if self._finishing:
                        break
                    if started is None:
                        self._room.wait(_IDLE_POLL_S)
                        if not self._intake:
                            break
                        continue
                    wait = started + limits.linger_s - time.monotonic()
                    if wait <= 0:
                        break
                    self._room.wait(wait)
                    continue
                entry = self._intake[0]
                if batch and size + entry.size > limits.max_bytes:
                    break
                self._intake.popleft()
                if started is None:
                    started = time.monotonic()
                batch.append(entry)
                size += entry.size
            self._room.notify_all()
        return batch

    def _write(self, batch: list[E]) -> None:
        events = self.events
        try:
            result: WriteResult[E] = self.write(batch, self._deadline)
        except Exception as exc:  # noqa: BLE001 - the contract says write never raises; if it does, keep the records
            events.sink_error("write", exc, len(batch))
            detail = f"write raised {type(exc).__name__}: {exc}"
            result = WriteResult(failed=[(entry, REASON_SINK_ERROR, detail) for entry in batch])
        checked = reconcile(batch, result)
        if checked.problems:
            what = "; ".join(f"{count} {problem}" for problem, count in sorted(checked.problems.items()))
            events.sink_error("result", SinkResultInconsistent(what), sum(checked.problems.values()))
        if checked.sent:
            self._completion.sent(checked.sent)
        missing = "the sink's result did not mention this record"
        dead = [*checked.failed, *((entry, REASON_SINK_LOST_TRACK, missing) for entry in checked.missing)]
        if dead:
            self._completion.failed(dead)
        if checked.unsent:
            self._completion.unsent(checked.unsent, UNSENT_DETAIL)


