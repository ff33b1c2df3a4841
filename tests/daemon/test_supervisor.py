"""Supervision: a crashing source is restarted with backoff while the other sources keep running."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.pipeline import SourceContext
from daemon.supervisor import SourceSupervisor
from daemon.telemetry import Telemetry
from sources.base import Source, SourceConfig
from sources.base import SourceContext as SourceContextProtocol


class FlakySource(Source):
    """Crashes `crashes` times, then emits `count` records and finishes."""

    config_model = SourceConfig

    def __init__(self, crashes: int, count: int) -> None:
        super().__init__(SourceConfig(type="flaky"))
        self.crashes = crashes
        self.count = count
        self.runs = 0

    def run(self, ctx: SourceContextProtocol) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"boom {self.runs}")
        for n in range(self.count):
            if not ctx.emit(b"{}", {}, f"flaky:{n}"):
                return


def supervise(
    source: Source, name: str, telemetry: Telemetry, buffer: RecordBuffer, tmp_path: Path, stopping: threading.Event
) -> SourceSupervisor:
    context = SourceContext(name, buffer, telemetry, DeadLetterFile(tmp_path / f"{name}.jsonl", "s"), stopping)
    return SourceSupervisor(source, context, telemetry, stopping, initial_backoff_s=0.05, max_backoff_s=0.2)


def test_crashing_source_is_restarted_and_others_keep_running(tmp_path: Path) -> None:
    """A source that crashes twice runs a third time and delivers; a healthy neighbour is unaffected."""
    telemetry, buffer, stopping = Telemetry("s"), RecordBuffer(1000, 10**6), threading.Event()
    flaky, steady = FlakySource(crashes=2, count=5), FlakySource(crashes=0, count=7)
    supervisors = [
        supervise(flaky, "flaky", telemetry, buffer, tmp_path, stopping),
        supervise(steady, "steady", telemetry, buffer, tmp_path, stopping),
    ]
    for s in supervisors:
        s.start()
    assert all(s.join(5) for s in supervisors)
    assert flaky.runs == 3
    assert telemetry.ledger.received == {"flaky": 5, "steady": 7}
    assert telemetry.source_restarts.labels(source="flaky")._value.get() == 2


def test_stop_interrupts_the_restart_backoff(tmp_path: Path) -> None:
    """A source waiting out its restart delay stops at once when the daemon stops."""
    telemetry, buffer, stopping = Telemetry("s"), RecordBuffer(10, 10**6), threading.Event()
    supervisor = supervise(FlakySource(crashes=1000, count=0), "dead", telemetry, buffer, tmp_path, stopping)
    supervisor.max_backoff_s = supervisor.initial_backoff_s = 30.0
    supervisor.start()
    time.sleep(0.2)
    stopping.set()
    assert supervisor.join(2)
