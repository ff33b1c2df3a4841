"""Where records end: the completion path from the sink (`Delivery`), the dead-letter and unsent outcomes
(`Outcomes`), and the daemon's fatal stop (`FatalStop`) for failures of its own parts.

Every record a source hands over ends exactly once: sent, dead-lettered (with a reason), unsent at
shutdown, or - only when the dead-letter file itself failed - lost (logged with its origin). A failure of
the daemon's own parts (the dead-letter file, telemetry, a bug in the worker) is fatal: `FatalStop` logs
it and wakes the main loop, which stops the daemon with a non-zero exit.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from daemon.deadletter import DeadLetterClosed, DeadLetterFile, DeadLetterUnavailable
from daemon.telemetry import Telemetry
from sinks.base import Entry, Record
from sinks.batch import REASON_SINK_LOST_TRACK

REASON_UNSENT_AT_SHUTDOWN = "unsent_at_shutdown"
COMPONENT_DEAD_LETTER = "dead_letter_file"
COMPONENT_SINK_WORKER = "sink_worker"


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
            last_resort(f"fatal_error component={component} error={type(error).__name__}: {error}")
        self.wake.set()


def last_resort(line: str) -> None:
    # If even stderr fails there is nothing left to report to; the exit code still says it.
    with contextlib.suppress(Exception):
        print(line, file=sys.stderr, flush=True)


class Outcomes:
    """Ends records in the dead-letter file, or - when that file fails - as lost, logged and counted.

    Records of the sources in `keeping` (those with a checkpoint or a spool) that are unsent at shutdown are
    not written to the dead-letter file: the next start reads them again (after the checkpoint, or from the
    spool), so they are counted as kept instead.
    """

    def __init__(
        self, telemetry: Telemetry, dead_letters: DeadLetterFile, fatal: FatalStop, keeping: AbstractSet[str] = frozenset()
    ) -> None:
        self.telemetry = telemetry
        self.dead_letters = dead_letters
        self.fatal = fatal
        self.keeping = keeping

    def dead_letter(self, record: Record, reason: str, detail: str) -> bool:
        """Dead-letter one record; False when the dead-letter file could not keep it (it is then lost)."""
        return bool(self.dead_letter_many([(record, reason, detail)]))

    def dead_letter_soon(self, record: Record, reason: str, detail: str, after_sync: Callable[[], None] | None) -> None:
        """Dead-letter one record without waiting for the disk: `after_sync` runs once an fsync covered it (the
        checkpoint thread syncs at every interval). For input a source rejects, one at a time."""
        try:
            self.dead_letters.write(
                data=record.data, source=record.source, origin=record.origin, reason=reason, detail=detail,
                durable=False, after_sync=after_sync,
            )  # fmt: skip
        except DeadLetterUnavailable as exc:
            self.lose([record], exc)
            return
        self.telemetry.record_dead_lettered(record.source, record.origin, reason, detail)

    def dead_letter_many(self, items: Iterable[tuple[Record, str, str]]) -> list[Record]:
        """Dead-letter each (record, reason, detail); returns the records kept. Those the file cannot take are
        lost together, in one log line."""
        kept = self._keep(items)
        for record, reason, detail in kept:
            self.telemetry.record_dead_lettered(record.source, record.origin, reason, detail)
        return [record for record, _, _ in kept]

    def unsent(self, records: Iterable[Record], detail: str) -> None:
        """Unsent records are kept in the dead-letter file for replay, but counted as unsent, not dead - or,
        for a source in `keeping`, left to its checkpoint or spool and counted as kept."""
        left: Counter[str] = Counter()
        to_file: list[Record] = []
        keeping = self.keeping
        for record in records:
            if record.source in keeping:
                left[record.source] += 1
            else:
                to_file.append(record)
        if left:
            self.telemetry.records_kept(left)
        if to_file:
            kept = Counter(r.source for r, _, _ in self._keep((r, REASON_UNSENT_AT_SHUTDOWN, detail) for r in to_file))
            if kept:
                self.telemetry.records_unsent(kept)

    def _keep(self, items: Iterable[tuple[Record, str, str]]) -> list[tuple[Record, str, str]]:
        """Write each item to the dead-letter file; returns those written. The rest are lost (and fatal)."""
        items = list(items)
        if not items:
            return []
        try:
            self.dead_letters.write_many(
                [(record.data, record.source, record.origin, reason, detail) for record, reason, detail in items]
            )
        except DeadLetterUnavailable as exc:
            # write_many keeps nothing of a batch it failed on: each is tried alone, so the lost are exactly named.
            return self._keep_one_by_one(items, exc)
        return items

    def _keep_one_by_one(
        self, items: list[tuple[Record, str, str]], first: DeadLetterUnavailable
    ) -> list[tuple[Record, str, str]]:
        kept: list[tuple[Record, str, str]] = []
        lost: list[Record] = []
        failure: DeadLetterUnavailable = first
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
        if lost:
            self.lose(lost, failure)
        return kept

    def lose(self, records: list[Record], error: DeadLetterUnavailable) -> None:
        self.telemetry.records_lost([(r.source, r.origin) for r in records], why=f"{type(error).__name__}: {error}")
        if not isinstance(error, DeadLetterClosed):  # closed at shutdown: the daemon is already stopping
            self.fatal.trigger(COMPONENT_DEAD_LETTER, error)


class Delivery:
    """The daemon's end of the sink's completion path (sinks/base.py `Completion`).

    Every entry handed to the sink is tracked until the sink reports it once: sent (counted, acknowledged to
    its source), failed (dead-lettered with the sink's reason, acknowledged) or unsent (kept in the
    dead-letter file for replay, not acknowledged). A report of an entry that is not outstanding (never
    submitted, or reported before) is a sink error, counted and ignored; what the sink never reported is
    dead-lettered at the end (`sink_result_incomplete`). Called from the sink's threads.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        outcomes: Outcomes,
        fatal: FatalStop,
        acknowledge: Callable[[str, list[Any]], None] | None = None,
    ) -> None:
        self.telemetry = telemetry
        self._outcomes = outcomes
        self._fatal = fatal
        self._acknowledge = acknowledge
        self._lock = threading.Lock()
        self._outstanding: dict[int, Entry] = {}

    def track(self, entries: Sequence[Entry]) -> None:
        """These entries are about to be submitted: from now on exactly one report is expected for each."""
        with self._lock:
            outstanding = self._outstanding
            for entry in entries:
                outstanding[id(entry)] = entry

    def untrack(self, entries: Sequence[Entry]) -> None:
        """The sink did not take these (its submit returned early): the caller accounts them."""
        with self._lock:
            for entry in entries:
                self._outstanding.pop(id(entry), None)

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self._outstanding)

    def sent(self, entries: Sequence[Entry]) -> None:
        claimed = self._claim(entries, "sent")
        if not claimed:
            return
        try:
            by_source: Counter[str] = Counter()
            tokens: dict[str, list[Any]] = {}
            for entry in claimed:
                record = entry.record
                by_source[record.source] += 1
                if record.token is not None:
                    tokens.setdefault(record.source, []).append(record.token)
            self.telemetry.records_sent(by_source, len(claimed))
            self._ack(tokens)
        except Exception as exc:  # noqa: BLE001 - telemetry broke: fatal, and the records are named
            self._broken(exc, claimed)

    def failed(self, items: Sequence[tuple[Entry, str, str]]) -> None:
        claimed = set(map(id, self._claim([entry for entry, _, _ in items], "failed")))
        kept = [(entry, reason, detail) for entry, reason, detail in items if id(entry) in claimed]
        if not kept:
            return
        try:
            written = self._outcomes.dead_letter_many((entry.record, reason, detail) for entry, reason, detail in kept)
            # Only what the dead-letter file holds is done: a lost record must not move a checkpoint past it.
            tokens: dict[str, list[Any]] = {}
            for record in written:
                if record.token is not None:
                    tokens.setdefault(record.source, []).append(record.token)
            self._ack(tokens)
        except Exception as exc:  # noqa: BLE001 - see sent
            self._broken(exc, [entry for entry, _, _ in kept])

    def unsent(self, entries: Sequence[Entry], detail: str) -> None:
        claimed = self._claim(entries, "unsent")
        if not claimed:
            return
        try:
            self._outcomes.unsent((entry.record for entry in claimed), detail)
        except Exception as exc:  # noqa: BLE001 - see sent
            self._broken(exc, claimed)

    def abandon(self, detail: str) -> None:
        """The sink finished without reporting these: dead-lettered, so nothing is lost silently."""
        with self._lock:
            left = list(self._outstanding.values())
        if not left:
            return
        self.telemetry.sink_error("result", SinkResultInconsistent(f"{len(left)} missing"), records=len(left))
        self.failed([(entry, REASON_SINK_LOST_TRACK, detail) for entry in left])

    def _claim(self, entries: Sequence[Entry], kind: str) -> list[Entry]:
        claimed: list[Entry] = []
        stray = 0
        with self._lock:
            pop = self._outstanding.pop
            for entry in entries:
                if pop(id(entry), None) is None:
                    stray += 1
                else:
                    claimed.append(entry)
        if stray:
            what = f"{stray} {kind} entries not outstanding (never submitted, or reported twice)"
            self.telemetry.sink_error("result", SinkResultInconsistent(what), records=stray)
        return claimed

    def _ack(self, tokens: dict[str, list[Any]]) -> None:
        if self._acknowledge is None:
            return
        for source, settled in tokens.items():
            self._acknowledge(source, settled)

    def _broken(self, error: Exception, entries: list[Entry]) -> None:
        """Accounting these entries failed midway (telemetry broke): fatal; they are kept as unsent (a sent
        record may then also be in the dead-letter file, never in neither)."""
        self._fatal.trigger(COMPONENT_SINK_WORKER, error)
        try:
            self._outcomes.unsent((e.record for e in entries), "accounting its outcome failed; kept for replay")
        except Exception:  # noqa: BLE001 - telemetry is what failed
            last_resort(f"records_lost origins={[e.record.origin for e in entries]}")


class SinkResultInconsistent(Exception):
    """A sink reported an entry it was not holding (never submitted, or already reported), or never reported one."""
