"""The completion path: each submitted entry is accounted once, strays are sink errors, and settled records are
acknowledged to their source by token."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.pipeline import REASON_SINK_LOST_TRACK, FatalStop, SinkWorker, SourceContext
from daemon.progress import ProgressWindow
from daemon.telemetry import Telemetry
from sinks.base import Completion, Deadline, Record, RecordRejected, Sink, SinkConfig
from sinks.batch import BatchLimits, WriteResult
from tests.fakes import FakeEntry, ScriptedSink, ledger

WAIT_S = 5.0


class Acks:
    """An acknowledge callback that keeps what it was told, per source."""

    def __init__(self, fail_for: str | None = None) -> None:
        self.tokens: dict[str, list[Any]] = {}
        self.fail_for = fail_for
        self.lock = threading.Lock()

    def __call__(self, source: str, tokens: list[Any]) -> None:
        with self.lock:
            self.tokens.setdefault(source, []).extend(tokens)
        if source == self.fail_for:
            raise RuntimeError("checkpoint bug")


class Rig:
    def __init__(self, tmp_path: Path, sink: Sink[Any], acks: Any = None) -> None:
        self.path = tmp_path / "dl.jsonl"
        self.buffer = RecordBuffer(max_records=1000, max_bytes=10**6)
        self.telemetry = Telemetry("fake")
        self.dead_letters = DeadLetterFile(self.path, "fake")
        self.stopping = threading.Event()
        self.fatal = FatalStop(self.telemetry)
        self.sink = sink
        self.worker = SinkWorker(sink, self.buffer, self.telemetry, self.dead_letters, self.fatal, acks)

    def context(self, name: str) -> SourceContext:
        return SourceContext(name, self.buffer, self.telemetry, self.dead_letters, self.stopping, self.sink, self.fatal)

    def dead(self) -> list[dict[str, Any]]:
        self.dead_letters.close()
        return [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []


def n_of(record: Record) -> int:
    return int(record.origin.rpartition(":")[2])


class RecordingWindow(ProgressWindow):
    """A progress window that also keeps every acknowledged position, in the order acknowledgements came."""

    def __init__(self) -> None:
        super().__init__()
        self.positions: dict[int, Any] = {}
        self.acked: list[Any] = []

    def emitted(self, key: Any, position: Any) -> int:
        number = super().emitted(key, position)
        self.positions[number] = (key, position)
        return number

    def acknowledged(self, numbers: Any) -> None:
        numbers = list(numbers)
        self.acked.extend(self.positions[n] for n in numbers)
        super().acknowledged(numbers)


def test_sent_and_dead_lettered_records_are_acknowledged_unsent_ones_are_not(tmp_path: Path) -> None:
    """Delivered and dead-lettered records (also those `prepare` refused) reach their own source's progress
    window; unsent ones never do."""
    from daemon.app import Acknowledger

    windows = {"a": RecordingWindow(), "b": RecordingWindow()}
    sink = ScriptedSink(
        BatchLimits(7, 10**6, 0.0),
        decide=lambda r: {3: "failed", 4: "unsent"}.get(n_of(r) % 10, "sent"),
        reject_when=lambda r: n_of(r) % 10 == 5,
    )
    rig = Rig(tmp_path, sink, Acknowledger(dict(windows), Telemetry("fake")))
    rig.worker.start()
    for source in ("a", "b"):
        ctx = SourceContext(
            source, rig.buffer, rig.telemetry, rig.dead_letters, rig.stopping, rig.sink, rig.fatal, windows[source]
        )
        for n in range(30):
            assert ctx.emit(b"x", None, f"{source}:{n}", token=(source, n))
    rig.worker.finish(WAIT_S)
    settled = {n for n in range(30) if n % 10 != 4}
    for source in ("a", "b"):
        assert sorted(n for _, n in windows[source].acked) == sorted(settled)
        assert {s for s, _ in windows[source].acked} == {source}
    totals = rig.telemetry.ledger.totals()
    assert totals == ledger(received=60, sent=42, dead_lettered=12, unsent=6)


class _StrayReportingSink(ScriptedSink):
    """Reports entry 2 as sent twice and entry 5 as failed after it was sent: reports of entries not outstanding."""

    def write(self, batch: list[FakeEntry], deadline: Deadline) -> WriteResult[FakeEntry]:
        result = super().write(batch, deadline)
        for entry in batch:
            if n_of(entry.record) in (2, 5):
                self._late.append(entry)
        return result

    def start(self, completion: Any) -> None:
        self._late: list[FakeEntry] = []
        self._sink_completion = completion
        super().start(completion)

    def finish(self, deadline: Deadline) -> None:
        super().finish(deadline)
        self._sink_completion.sent([self._late[0]])
        self._sink_completion.failed([(self._late[1], "put_rejected", "late")])


def test_a_report_of_an_entry_not_outstanding_is_a_sink_error_and_changes_no_count(tmp_path: Path) -> None:
    """A second report of an already-settled entry is counted as a sink error and ignored: each record counted once."""
    rig = Rig(tmp_path, _StrayReportingSink(BatchLimits(10, 10**6, 0.0)))
    rig.worker.start()
    ctx = rig.context("src")
    for n in range(10):
        assert ctx.emit(b"x", None, f"f:{n}")
    rig.worker.finish(WAIT_S)
    assert rig.telemetry.ledger.totals() == ledger(received=10, sent=10)
    assert rig.telemetry.sink_errors.labels(sink="fake", stage="result")._value.get() == 2
    assert rig.dead() == []


class _ForgetfulSink(Sink[FakeEntry]):
    """Takes entries and reports only the even ones: a sink that loses track of what it holds."""

    config_model = SinkConfig

    def __init__(self) -> None:
        super().__init__(SinkConfig(type="forgetful"), events=None)  # type: ignore[arg-type]

    def prepare(self, record: Record) -> FakeEntry:
        if record.data == b"reject":
            raise RecordRejected("record_too_large", "big")
        return FakeEntry(record, len(record.data))

    def start(self, completion: Completion[FakeEntry]) -> None:
        self.completion = completion

    def submit(self, entries: Sequence[FakeEntry], deadline: Deadline) -> int:
        self.completion.sent([e for e in entries if n_of(e.record) % 2 == 0])
        return len(entries)

    def finish(self, deadline: Deadline) -> None:
        return None


def test_entries_the_sink_never_reports_are_dead_lettered_when_it_finishes(tmp_path: Path) -> None:
    """What the sink took but never reported ends in the dead-letter file as sink_result_incomplete, counted once."""
    rig = Rig(tmp_path, _ForgetfulSink())
    rig.worker.start()
    ctx = rig.context("src")
    for n in range(10):
        assert ctx.emit(b"x", None, f"f:{n}")
    rig.worker.finish(WAIT_S)
    assert rig.telemetry.ledger.totals() == ledger(received=10, sent=5, dead_lettered=5)
    dead = rig.dead()
    assert sorted(n_of(Record(b"", None, "", d["origin"])) for d in dead) == [1, 3, 5, 7, 9]
    assert {d["reason"] for d in dead} == {REASON_SINK_LOST_TRACK}


def test_a_failing_acknowledge_is_counted_and_delivery_goes_on(tmp_path: Path) -> None:
    """A progress window whose acknowledged raises is counted; every record is still delivered and counted."""
    from daemon.app import Acknowledger
    from daemon.progress import ProgressWindow

    class Broken(ProgressWindow):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def acknowledged(self, numbers: Any) -> None:
            self.calls += 1
            raise RuntimeError("checkpoint bug")

    telemetry = Telemetry("fake")
    source = Broken()
    acknowledger = Acknowledger({"src": source}, telemetry)
    rig = Rig(tmp_path, ScriptedSink(BatchLimits(5, 10**6, 0.0)))
    rig.telemetry = telemetry
    rig.worker = SinkWorker(rig.sink, rig.buffer, telemetry, rig.dead_letters, rig.fatal, acknowledger)
    rig.worker.start()
    ctx = SourceContext("src", rig.buffer, telemetry, rig.dead_letters, rig.stopping, rig.sink, rig.fatal, source)
    for n in range(20):
        assert ctx.emit(b"x", None, f"f:{n}", token=("f", n))
    rig.worker.finish(WAIT_S)
    assert telemetry.ledger.totals()["sent"] == 20 and source.calls >= 4
    assert telemetry.acknowledge_errors.labels(source="src")._value.get() == source.calls
    assert not rig.fatal.triggered


@pytest.mark.parametrize("chunk", [1, 3, 500])
def test_get_many_takes_up_to_the_chunk_in_order_and_frees_its_room(chunk: int) -> None:
    """get_many returns the oldest entries, at most `chunk`, and their bytes leave the buffer's count."""
    buffer = RecordBuffer(max_records=100, max_bytes=10**6)
    stop = threading.Event()
    for n in range(7):
        assert buffer.put(FakeEntry(Record(b"x" * 10, None, "s", f"f:{n}"), 10), stop)
    taken = buffer.get_many(chunk, 0.0)
    assert [e.record.origin for e in taken] == [f"f:{n}" for n in range(min(chunk, 7))]
    assert len(buffer) == 7 - len(taken)
    rest = buffer.get_many(500, 0.0)
    assert len(taken) + len(rest) == 7 and buffer.size_bytes == 0
    assert buffer.get_many(5, 0.01) == []
