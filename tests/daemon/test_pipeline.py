"""The sink worker: batches within the sink's limits and accounts every record exactly once."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.pipeline import REASON_SINK_LOST_TRACK, REASON_UNSENT_AT_SHUTDOWN, SinkWorker, SourceContext
from daemon.telemetry import Telemetry
from sinks.base import BatchLimits, Record
from tests.fakes import ScriptedSink


def make_record(n: int, size: int = 10, source: str = "src") -> Record:
    return Record(data=str(n).encode().ljust(size, b" "), event={"n": n}, source=source, origin=f"f:{n}")


@pytest.fixture
def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A buffer, telemetry and dead-letter file wired to a worker built by the test."""

    class Rig:
        buffer = RecordBuffer(max_records=1000, max_bytes=10**6)
        telemetry = Telemetry("fake")
        dead_letters = DeadLetterFile(tmp_path / "dl.jsonl", "fake")
        stopping = threading.Event()

        def context(self, name: str = "src") -> SourceContext:
            return SourceContext(name, self.buffer, self.telemetry, self.dead_letters, self.stopping)

        def dead(self) -> list[dict]:  # type: ignore[type-arg]
            self.dead_letters.close()
            return [json.loads(line) for line in (tmp_path / "dl.jsonl").read_text().splitlines()]

    return Rig()


def run_worker(rig, sink: ScriptedSink, records: int, deadline: float = 5.0, size: int = 10) -> SinkWorker:  # type: ignore[no-untyped-def]
    worker = SinkWorker(sink, rig.buffer, rig.telemetry, rig.dead_letters)
    worker.start()
    ctx = rig.context()
    for n in range(records):
        assert ctx.emit(make_record(n, size).data, {"n": n}, f"f:{n}")
    worker.finish(deadline)
    return worker


def test_batches_respect_record_and_byte_limits(rig) -> None:  # type: ignore[no-untyped-def]
    """No batch exceeds max_records or max_bytes, and every record is sent once, in order."""
    sink = ScriptedSink(BatchLimits(max_records=7, max_bytes=45, linger_s=0.05))
    run_worker(rig, sink, 50)
    sizes = [len(b) for b in sink.batches]
    assert max(sizes) <= 7
    assert all(sum(len(r.data) for r in b) <= 45 for b in sink.batches)
    assert [int(r.event["n"]) for b in sink.batches for r in b] == list(range(50))
    assert rig.telemetry.ledger.totals() == {"received": 50, "sent": 50, "dead_lettered": 0, "unsent": 0}


def test_rejected_and_failed_records_are_dead_lettered_and_counted(rig) -> None:  # type: ignore[no-untyped-def]
    """Records the sink rejects in prepare or fails in write land in the dead-letter file with reasons."""
    sink = ScriptedSink(
        BatchLimits(10, 10**6, 0.01),
        decide=lambda r: "failed" if r.event["n"] % 10 == 3 else "sent",
        reject_when=lambda r: r.event["n"] % 10 == 5,
    )
    run_worker(rig, sink, 40)
    totals = rig.telemetry.ledger.totals()
    assert totals == {"received": 40, "sent": 32, "dead_lettered": 8, "unsent": 0}
    reasons = sorted((d["reason"], d["origin"]) for d in rig.dead())
    assert reasons[:4] == [("put_rejected", "f:13"), ("put_rejected", "f:23"), ("put_rejected", "f:3"), ("put_rejected", "f:33")]
    assert {r for r, _ in reasons} == {"put_rejected", "record_too_large"}


def test_entries_missing_from_a_sink_result_are_not_lost(rig) -> None:  # type: ignore[no-untyped-def]
    """An entry the sink forgot to report is dead-lettered as sink_result_incomplete, not dropped."""
    sink = ScriptedSink(BatchLimits(10, 10**6, 0.01), decide=lambda r: "lost" if r.event["n"] == 4 else "sent")
    run_worker(rig, sink, 10)
    assert rig.telemetry.ledger.totals()["dead_lettered"] == 1
    assert [d["reason"] for d in rig.dead()] == [REASON_SINK_LOST_TRACK]


def test_deadline_turns_undelivered_records_into_unsent(rig) -> None:  # type: ignore[no-untyped-def]
    """With the destination down, finish() returns by the deadline and reports every record as unsent."""
    sink = ScriptedSink(BatchLimits(5, 10**6, 0.01))
    sink.block.clear()
    started = time.monotonic()
    run_worker(rig, sink, 23, deadline=0.5)
    assert time.monotonic() - started < 3
    assert rig.telemetry.ledger.totals() == {"received": 23, "sent": 0, "dead_lettered": 0, "unsent": 23}
    dead = rig.dead()
    assert len(dead) == 23 and {d["reason"] for d in dead} == {REASON_UNSENT_AT_SHUTDOWN}


def test_full_buffer_blocks_the_source_until_stopping(rig) -> None:  # type: ignore[no-untyped-def]
    """emit blocks while the buffer is full and returns False (record not taken) once stopping."""
    rig.buffer = RecordBuffer(max_records=3, max_bytes=10**6)
    ctx = rig.context()
    assert all(ctx.emit(b"x", None, f"f:{n}") for n in range(3))
    result: list[bool] = []
    blocked = threading.Thread(target=lambda: result.append(ctx.emit(b"y", None, "f:4")))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "emit should block while the buffer is full"
    rig.stopping.set()
    blocked.join(2)
    assert result == [False]
    assert rig.telemetry.ledger.totals()["received"] == 3


def test_reject_counts_received_and_dead_lettered(rig) -> None:  # type: ignore[no-untyped-def]
    """A source's rejection is counted as received and dead-lettered, and its bytes are kept exactly."""
    ctx = rig.context("replay")
    ctx.reject(b"\xff\x00", "t.jsonl:9", "invalid_utf8", "byte 0: invalid start byte")
    assert rig.telemetry.ledger.totals() == {"received": 1, "sent": 0, "dead_lettered": 1, "unsent": 0}
    (entry,) = rig.dead()
    assert entry["origin"] == "t.jsonl:9" and entry["data_base64"] == "/wA=" and entry["source"] == "replay"


def test_a_sink_that_raises_costs_records_to_the_dead_letter_file_not_the_worker(rig) -> None:  # type: ignore[no-untyped-def]
    """prepare or write raising (a sink bug) dead-letters those records as sink_error and the worker goes on."""
    sink = ScriptedSink(BatchLimits(5, 10**6, 0.01))
    real_prepare, real_write = sink.prepare, sink.write

    def prepare(record: Record):  # type: ignore[no-untyped-def]
        if record.event["n"] == 2:
            raise KeyError("boom")
        return real_prepare(record)

    def write(batch, deadline):  # type: ignore[no-untyped-def]
        if any(e.record.event["n"] == 7 for e in batch):
            raise RuntimeError("sink bug")
        return real_write(batch, deadline)

    sink.prepare, sink.write = prepare, write  # type: ignore[method-assign]
    run_worker(rig, sink, 20)
    totals = rig.telemetry.ledger.totals()
    dead = rig.dead()
    assert {d["reason"] for d in dead} == {"sink_error"}
    assert "f:2" in {d["origin"] for d in dead} and "f:7" in {d["origin"] for d in dead}
    assert totals["received"] == 20 and totals["sent"] + totals["dead_lettered"] == 20 and totals["unsent"] == 0
    assert totals["sent"] >= 10, "records after the failures must still be delivered"
