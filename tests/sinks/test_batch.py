"""BatchSink: the one-batch-at-a-time shape behind the streaming contract, and what happens when its thread dies."""

from __future__ import annotations

import threading
from pathlib import Path

from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.pipeline import COMPONENT_SINK_WORKER, FatalStop, SinkWorker, SourceContext
from daemon.telemetry import Telemetry
from sinks.batch import BatchLimits
from tests.conftest import poll_until
from tests.fakes import ScriptedSink


class _LimitsBreakSink(ScriptedSink):
    """Its `limits` raise once a first batch was written: a bug that kills the batching thread."""

    def __init__(self) -> None:
        super().__init__(BatchLimits(5, 10**6, 0.0))
        self.broken = threading.Event()

    @property
    def limits(self) -> BatchLimits:
        if self.broken.is_set():
            raise RuntimeError("limits bug")
        return super().limits


def test_a_dead_batching_thread_is_fatal_and_every_record_keeps_one_outcome(tmp_path: Path) -> None:
    """When the batching thread dies, the next submit raises into the worker: sink_worker fatal, nothing lost."""
    telemetry = Telemetry("fake")
    fatal = FatalStop(telemetry)
    buffer = RecordBuffer(1000, 10**6)
    dead_letters = DeadLetterFile(tmp_path / "dl.jsonl", "fake")
    sink = _LimitsBreakSink()
    worker = SinkWorker(sink, buffer, telemetry, dead_letters, fatal)
    ctx = SourceContext("src", buffer, telemetry, dead_letters, threading.Event(), sink, fatal)
    worker.start()
    for n in range(5):
        assert ctx.emit(b"x", None, f"f:{n}")
    poll_until(lambda: telemetry.ledger.totals()["sent"] == 5, 5.0, "the first batch")
    sink.broken.set()
    for n in range(5, 2000):
        if not ctx.emit(b"x", None, f"f:{n}") or fatal.triggered:
            break
    poll_until(lambda: fatal.triggered, 5.0, "the fatal stop")
    assert [c for c, _ in fatal.failures] == [COMPONENT_SINK_WORKER]
    worker.finish(1.0)
    totals = telemetry.ledger.totals()
    assert totals["lost"] == 0 and totals["received"] == totals["sent"] + totals["dead_lettered"] + totals["unsent"]
    assert totals["sent"] == 5 and totals["received"] > 5
