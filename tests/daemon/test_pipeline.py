"""The sink worker: batches within the sink's limits and accounts every record exactly once."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.pipeline import REASON_SINK_LOST_TRACK, REASON_UNSENT_AT_SHUTDOWN, FatalStop, SinkWorker, SourceContext
from daemon.telemetry import Telemetry
from sinks.base import Deadline, Record
from sinks.batch import BatchLimits, WriteResult
from tests.conftest import poll_until
from tests.fakes import FakeEntry, ScriptedSink, ledger

# Polling against a deadline, never a bare sleep: how long a test waits for a condition at most.
WAIT_S = 5.0


def num(record: Record) -> int:
    """The record's number, from its origin "f:N" (the parsed event is dropped once the sink prepared it)."""
    return int(record.origin.rpartition(":")[2])


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    poll_until(condition, timeout, "the condition", interval=0.005)


class Rig:
    """A buffer, telemetry and dead-letter file wired to a worker built by the test."""

    def __init__(self, tmp_path: Path, dead_letter_path: Path | None = None) -> None:
        self.path = dead_letter_path or tmp_path / "dl.jsonl"
        self.buffer = RecordBuffer(max_records=1000, max_bytes=10**6)
        self.telemetry = Telemetry("fake")
        self.dead_letters = DeadLetterFile(self.path, "fake")
        self.stopping = threading.Event()
        self.fatal = FatalStop(self.telemetry)
        self.sink: Any = ScriptedSink(BatchLimits(10, 10**6, 0.01))

    def context(self, name: str = "src") -> SourceContext:
        return SourceContext(name, self.buffer, self.telemetry, self.dead_letters, self.stopping, self.sink, self.fatal)

    def worker(self) -> SinkWorker:
        return SinkWorker(self.sink, self.buffer, self.telemetry, self.dead_letters, self.fatal)

    def dead(self) -> list[dict[str, Any]]:
        self.dead_letters.close()
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def balanced(self) -> bool:
        t = self.telemetry.ledger.totals()
        return t["received"] == t["sent"] + t["dead_lettered"] + t["unsent"] + t["lost"]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def run_worker(rig: Rig, sink: Any, records: int, deadline: float = 5.0, size: int = 10) -> SinkWorker:
    rig.sink = sink
    worker = rig.worker()
    worker.start()
    ctx = rig.context()
    for n in range(records):
        assert ctx.emit(str(n).encode().ljust(size, b" "), {"n": n}, f"f:{n}")
    worker.finish(deadline)
    return worker


def test_batches_respect_record_and_byte_limits(rig: Rig) -> None:
    """No batch exceeds max_records or max_bytes, and every record is sent once, in order."""
    sink = ScriptedSink(BatchLimits(max_records=7, max_bytes=45, linger_s=0.05))
    run_worker(rig, sink, 50)
    sizes = [len(b) for b in sink.batches]
    assert max(sizes) <= 7
    assert all(sum(len(r.data) for r in b) <= 45 for b in sink.batches)
    assert [num(r) for b in sink.batches for r in b] == list(range(50))
    assert rig.telemetry.ledger.totals() == ledger(received=50, sent=50)


def test_rejected_and_failed_records_are_dead_lettered_and_counted(rig: Rig) -> None:
    """Records the sink rejects in prepare or fails in write land in the dead-letter file with reasons."""
    sink = ScriptedSink(
        BatchLimits(10, 10**6, 0.01),
        decide=lambda r: "failed" if num(r) % 10 == 3 else "sent",
        reject_when=lambda r: r.event["n"] % 10 == 5,
    )
    run_worker(rig, sink, 40)
    totals = rig.telemetry.ledger.totals()
    assert totals == ledger(received=40, sent=32, dead_lettered=8)
    reasons = sorted((d["reason"], d["origin"]) for d in rig.dead())
    assert reasons[:4] == [("put_rejected", "f:13"), ("put_rejected", "f:23"), ("put_rejected", "f:3"), ("put_rejected", "f:33")]
    assert {r for r, _ in reasons} == {"put_rejected", "record_too_large"}


def test_prepare_runs_in_the_source_thread_and_the_parsed_event_is_dropped(rig: Rig) -> None:
    """emit prepares the entry in the caller's thread, and the buffered record no longer holds its parsed event."""
    seen: list[tuple[int, Any]] = []
    real_prepare = rig.sink.prepare

    def prepare(record: Record) -> FakeEntry:
        seen.append((threading.get_ident(), record.event))
        return real_prepare(record)

    rig.sink.prepare = prepare
    assert rig.context().emit(b'{"n": 1}', {"n": 1}, "f:1")
    (entry,) = rig.buffer.drain()
    assert seen == [(threading.get_ident(), {"n": 1})]
    assert entry.record.event is None


def test_entries_missing_from_a_sink_result_are_not_lost(rig: Rig) -> None:
    """An entry the sink forgot to report is dead-lettered as sink_result_incomplete, not dropped."""
    sink = ScriptedSink(BatchLimits(10, 10**6, 0.01), decide=lambda r: "lost" if num(r) == 4 else "sent")
    run_worker(rig, sink, 10)
    assert rig.telemetry.ledger.totals()["dead_lettered"] == 1
    assert [d["reason"] for d in rig.dead()] == [REASON_SINK_LOST_TRACK]


class _DoubleCountingSink(ScriptedSink):
    """Lists entry 2 twice in `sent` and entry 5 in both `sent` and `failed`: an inconsistent WriteResult."""

    def write(self, batch: list[FakeEntry], deadline: Deadline) -> WriteResult[FakeEntry]:
        result = super().write(batch, deadline)
        for entry in batch:
            if num(entry.record) == 2:
                result.sent.append(entry)
            if num(entry.record) == 5:
                result.failed.append((entry, "put_rejected", "also failed"))
        return result


def test_entries_listed_twice_in_a_sink_result_are_counted_once_and_reported(rig: Rig) -> None:
    """Duplicates and double outcomes are detected: each record counted once (doubtful ones dead-lettered), sink_error logged."""
    run_worker(rig, _DoubleCountingSink(BatchLimits(10, 10**6, 0.01)), 10)
    assert rig.telemetry.ledger.totals() == ledger(received=10, sent=9, dead_lettered=1)
    assert [d["origin"] for d in rig.dead()] == ["f:5"]
    assert rig.telemetry.sink_errors.labels(sink="fake", stage="result")._value.get() == 1


def test_deadline_turns_undelivered_records_into_unsent(rig: Rig) -> None:
    """With the destination down, finish() returns by the deadline and reports every record as unsent."""
    sink = ScriptedSink(BatchLimits(5, 10**6, 0.01))
    sink.block.clear()
    started = time.monotonic()
    run_worker(rig, sink, 23, deadline=0.5)
    assert time.monotonic() - started < 3
    assert rig.telemetry.ledger.totals() == ledger(received=23, unsent=23)
    dead = rig.dead()
    assert len(dead) == 23 and {d["reason"] for d in dead} == {REASON_UNSENT_AT_SHUTDOWN}


def test_full_buffer_blocks_the_source_and_a_record_refused_at_stop_is_kept_as_unsent(rig: Rig) -> None:
    """emit blocks while the buffer is full; stopping then refuses the record, which ends unsent in the dead-letter file."""
    rig.buffer = RecordBuffer(max_records=3, max_bytes=10**6)
    ctx = rig.context()
    assert all(ctx.emit(b"x", None, f"f:{n}") for n in range(3))
    result: list[bool] = []
    blocked = threading.Thread(target=lambda: result.append(ctx.emit(b"y", None, "f:4")))
    blocked.start()
    wait_until(lambda: rig.buffer.blocked_producers == 1)
    assert result == [], "emit must not return while the buffer is full"
    rig.stopping.set()
    blocked.join(WAIT_S)
    assert result == [False]
    assert not ctx.emit(b"z", None, "f:5"), "once stopping, emit refuses without taking the record"
    assert rig.telemetry.ledger.totals() == ledger(received=4, unsent=1)
    assert [(d["origin"], d["reason"]) for d in rig.dead()] == [("f:4", REASON_UNSENT_AT_SHUTDOWN)]


def test_reject_counts_received_and_dead_lettered(rig: Rig) -> None:
    """A source's rejection is counted as received and dead-lettered, and its bytes are kept exactly."""
    ctx = rig.context("replay")
    ctx.reject(b"\xff\x00", "t.jsonl:9", "invalid_utf8", "byte 0: invalid start byte")
    assert rig.telemetry.ledger.totals() == ledger(received=1, dead_lettered=1)
    (entry,) = rig.dead()
    assert entry["origin"] == "t.jsonl:9" and entry["data_base64"] == "/wA=" and entry["source"] == "replay"


def test_a_sink_that_raises_costs_records_to_the_dead_letter_file_not_the_worker(rig: Rig) -> None:
    """prepare or write raising (a sink bug) dead-letters those records as sink_error and the worker goes on."""
    sink = ScriptedSink(BatchLimits(5, 10**6, 0.01))
    real_prepare, real_write = sink.prepare, sink.write

    def prepare(record: Record) -> FakeEntry:
        if num(record) == 2:
            raise KeyError("boom")
        return real_prepare(record)

    def write(batch: list[FakeEntry], deadline: Deadline) -> WriteResult[FakeEntry]:
        if any(num(e.record) == 7 for e in batch):
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
    assert not rig.fatal.triggered


def _scrape(rig: Rig) -> dict[str, float]:
    """Totals per metric family from one real Prometheus exposition of the registry."""
    from prometheus_client import generate_latest

    totals: dict[str, float] = {}
    for line in generate_latest(rig.telemetry.registry).decode().splitlines():
        if line.startswith("tweet_producer_records_") and "_created" not in line:
            name = line.split("{")[0].split(" ")[0].removesuffix("_total")
            totals[name] = totals.get(name, 0.0) + float(line.rpartition(" ")[2])
    return totals


def test_a_scrape_never_shows_more_outcomes_than_received_records(rig: Rig) -> None:
    """Under concurrent sources and a fast sink, every scrape sees sent+failed+unsent+lost <= received."""
    rig.sink = ScriptedSink(BatchLimits(50, 10**6, 0.0), decide=lambda r: "failed" if num(r) % 7 == 0 else "sent")
    worker = rig.worker()
    worker.start()
    per_source = 4000

    def produce(name: str) -> None:
        ctx = rig.context(name)
        for n in range(per_source):
            ctx.emit(b"{}", {}, f"{name}:{n}")

    producers = [threading.Thread(target=produce, args=(f"s{i}",)) for i in range(3)]
    for thread in producers:
        thread.start()
    scrapes = 0
    while any(t.is_alive() for t in producers) or scrapes < 50:
        seen = _scrape(rig)
        outcomes = sum(seen.get(f"tweet_producer_records_{k}", 0.0) for k in ("sent", "failed", "unsent", "lost"))
        assert outcomes <= seen.get("tweet_producer_records_received", 0.0), seen
        scrapes += 1
    worker.finish(WAIT_S)
    assert rig.telemetry.ledger.totals()["received"] == 3 * per_source and rig.balanced()


def test_a_record_is_counted_received_before_the_worker_can_write_it(rig: Rig) -> None:
    """Deterministic half of the scrape invariant: emit holds back after its put until the worker wrote the record,
    and the write already sees it counted received."""
    written = threading.Event()
    seen_at_write: list[tuple[int, int]] = []
    rig.sink = ScriptedSink(BatchLimits(1, 10**6, 0.0))
    real_write, real_put = rig.sink.write, rig.buffer.put

    def write(batch: list[FakeEntry], deadline: Deadline) -> WriteResult[FakeEntry]:
        seen_at_write.append((rig.telemetry.ledger.totals()["received"], len(batch)))
        written.set()
        return real_write(batch, deadline)

    def put(entry: Any, stopping: threading.Event) -> bool:
        taken = real_put(entry, stopping)
        assert written.wait(WAIT_S), "the worker never wrote the record"
        return taken

    rig.sink.write = write
    rig.buffer.put = put  # type: ignore[method-assign]
    worker = rig.worker()
    worker.start()
    assert rig.context().emit(b"{}", {}, "f:1")
    worker.finish(WAIT_S)
    assert seen_at_write == [(1, 1)]


def test_a_scrape_collects_the_outcome_counters_before_received() -> None:
    """Collection order half: a scrape reads sent/failed/unsent/lost before received, so a record counted between the
    two reads can only make received larger."""
    from prometheus_client import generate_latest

    telemetry = Telemetry("s")
    telemetry.record_received("a")
    text = generate_latest(telemetry.registry).decode()
    position = {
        k: text.index(f"# TYPE tweet_producer_records_{k}_total ") for k in ("received", "sent", "failed", "unsent", "lost")
    }
    assert all(position["received"] > position[k] for k in ("sent", "failed", "unsent", "lost")), position


def test_dead_letter_file_failure_in_a_source_is_fatal_and_the_reject_is_counted_once(tmp_path: Path) -> None:
    """A reject whose dead-letter write fails (ENOSPC) is received once, counted lost with its origin, and is fatal."""
    from structlog.testing import capture_logs

    rig = Rig(tmp_path, Path("/dev/full"))
    with capture_logs() as logs:
        rig.context().reject(b"not json", "t.jsonl:3", "invalid_json", "Expecting value")
        rig.context().reject(b"also bad", "t.jsonl:4", "invalid_json", "Expecting value")
    assert rig.telemetry.ledger.totals() == ledger(received=2, lost=2)
    assert [c for c, _ in rig.fatal.failures] == ["dead_letter_file"] and rig.fatal.wake.is_set()
    fatal = [e for e in logs if e["event"] == "fatal_error"]
    assert len(fatal) == 1 and "No space left" in fatal[0]["cause"]
    assert [e["origins"] for e in logs if e["event"] == "records_lost"] == [["t.jsonl:3"], ["t.jsonl:4"]]


def test_dead_letter_file_failure_in_the_worker_is_fatal_and_every_record_is_accounted(tmp_path: Path) -> None:
    """The worker survives a failing dead-letter file: the fatal error is raised, failed records count as lost, none vanish."""
    rig = Rig(tmp_path, Path("/dev/full"))
    sink = ScriptedSink(BatchLimits(4, 10**6, 0.01), decide=lambda r: "failed" if num(r) % 2 else "sent")
    worker = run_worker(rig, sink, 20)
    assert not worker.thread.is_alive()
    assert [c for c, _ in rig.fatal.failures] == ["dead_letter_file"]
    assert rig.telemetry.ledger.totals() == ledger(received=20, sent=10, lost=10)


def test_a_failure_accounting_a_delivery_is_fatal_and_its_records_are_kept(rig: Rig) -> None:
    """Counting a sent batch raising (telemetry broken) triggers sink_worker fatal; that batch ends unsent in the
    dead-letter file (kept, never in neither), and every record still has exactly one outcome."""
    calls = {"n": 0}
    real_records_sent = rig.telemetry.records_sent

    def records_sent(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("counter bug")
        real_records_sent(*args, **kwargs)

    rig.telemetry.records_sent = records_sent  # type: ignore[method-assign]
    rig.sink = ScriptedSink(BatchLimits(5, 10**6, 0.0))
    worker = rig.worker()
    ctx = rig.context()
    for n in range(20):
        assert ctx.emit(b"x", None, f"f:{n}")
    worker.start()
    wait_until(lambda: rig.fatal.triggered)
    assert [c for c, _ in rig.fatal.failures] == ["sink_worker"]
    worker.finish(1.0)
    totals = rig.telemetry.ledger.totals()
    assert totals["received"] == 20 and totals["lost"] == 0 and totals["dead_lettered"] == 0
    assert totals["sent"] + totals["unsent"] == 20 and totals["unsent"] == 5
    assert sorted(num_origin(d["origin"]) for d in rig.dead()) == list(range(5, 10))


def num_origin(origin: str) -> int:
    return int(origin.rpartition(":")[2])


def test_a_telemetry_failure_in_a_source_context_is_fatal_not_a_source_crash(rig: Rig) -> None:
    """When counting a dead letter raises (telemetry broken), reject does not raise into the source (no crash, no
    re-read): the daemon's fatal stop is triggered naming the source, and the record's origin is logged."""
    from structlog.testing import capture_logs

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(32, "Broken pipe")

    rig.telemetry.record_dead_lettered = broken  # type: ignore[method-assign]
    ctx = rig.context("replay")
    with capture_logs() as logs:
        ctx.reject(b"junk", "t.jsonl:1", "invalid_json", "Expecting value")
    assert [c for c, _ in rig.fatal.failures] == ["source replay"] and rig.fatal.wake.is_set()
    assert [e["origins"] for e in logs if e["event"] == "records_lost"] == [["t.jsonl:1"]]
