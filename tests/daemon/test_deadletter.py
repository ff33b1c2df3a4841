"""The dead-letter file's own failures and the shutdown edges: nothing is written into a closed or broken file, and
every record that could not be kept is counted as lost instead of vanishing."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.app import stop_and_flush
from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterClosed, DeadLetterFile, DeadLetterWriteFailed
from daemon.logs import get_logger
from daemon.pipeline import FatalStop, SinkWorker, SourceContext
from daemon.supervisor import SourceSupervisor
from daemon.telemetry import Telemetry
from sinks.batch import BatchLimits
from sources.base import Source, SourceConfig
from sources.base import SourceContext as SourceContextProtocol
from tests.fakes import ScriptedSink, ledger

WAIT_S = 5.0


def line(dead_letters: DeadLetterFile, origin: str) -> None:
    dead_letters.write(data=b"{}", source="s", origin=origin, reason="r", detail="d")


def test_a_write_that_fails_raises_and_the_file_refuses_every_later_write() -> None:
    """ENOSPC (/dev/full) raises DeadLetterWriteFailed naming the cause, and later writes fail fast the same way."""
    dead_letters = DeadLetterFile(Path("/dev/full"), "s")
    with pytest.raises(DeadLetterWriteFailed, match="No space left") as first:
        line(dead_letters, "a:1")
    assert isinstance(first.value.__cause__, OSError)
    with pytest.raises(DeadLetterWriteFailed, match="failed earlier"):
        line(dead_letters, "a:2")
    dead_letters.close()  # the unflushed bytes of the failed line must not make close raise
    assert dead_letters.failure is not None


def test_writes_after_close_are_refused_not_attempted(tmp_path: Path) -> None:
    """After close, write raises DeadLetterClosed (no ValueError from a closed handle) and the file keeps its lines."""
    dead_letters = DeadLetterFile(tmp_path / "dl.jsonl", "s")
    line(dead_letters, "a:1")
    dead_letters.close()
    dead_letters.close()
    with pytest.raises(DeadLetterClosed):
        line(dead_letters, "a:2")
    assert [json.loads(raw)["origin"] for raw in (tmp_path / "dl.jsonl").read_text().splitlines()] == ["a:1"]


class StubbornSource(Source):
    """Ignores the stop flag until `release` is set, then emits once and rejects once (like a source stuck in a read)."""

    config_model = SourceConfig

    def __init__(self) -> None:
        super().__init__(SourceConfig(type="stubborn"))
        self.started = threading.Event()
        self.release = threading.Event()
        self.emitted: list[bool] = []

    def run(self, ctx: SourceContextProtocol) -> None:
        self.started.set()
        self.release.wait(WAIT_S * 4)
        self.emitted.append(ctx.emit(b'{"late": 1}', {"late": 1}, "stubborn:1"))
        ctx.reject(b"late junk", "stubborn:2", "invalid_json", "Expecting value")


def test_a_source_abandoned_at_shutdown_never_writes_into_the_closed_dead_letter_file(tmp_path: Path) -> None:
    """A source that outlives its join timeout is refused (counted, logged) after the daemon closed the file: no crash, no
    write into a closed handle, the summary still balances."""
    telemetry, stopping = Telemetry("s"), threading.Event()
    fatal = FatalStop(telemetry)
    buffer = RecordBuffer(100, 10**6)
    path = tmp_path / "dl.jsonl"
    dead_letters = DeadLetterFile(path, "s")
    sink = ScriptedSink(BatchLimits(10, 10**6, 0.01))
    worker = SinkWorker(sink, buffer, telemetry, dead_letters, fatal)
    source = StubbornSource()
    context = SourceContext("stubborn", buffer, telemetry, dead_letters, stopping, sink, fatal)
    supervisor = SourceSupervisor(source, context, telemetry, stopping, 0.05, 0.1, fatal)
    worker.start()
    supervisor.start()
    assert source.started.wait(WAIT_S)
    stopping.set()
    with capture_logs() as logs:
        stop_and_flush([supervisor], worker, 0.05, 1.0, get_logger())
        dead_letters.close()  # what the daemon's cleanup does next
        source.release.set()
        assert supervisor.join(WAIT_S)
    assert source.emitted == [False]
    assert supervisor.ended_cleanly.is_set(), "the late writes must not crash the source"
    assert telemetry.refused.labels(source="stubborn")._value.get() == 1
    assert telemetry.ledger.totals() == ledger()
    assert not path.read_text() and not fatal.triggered
    events = [e["event"] for e in logs]
    assert "source_did_not_stop" in events and "input_refused_after_shutdown" in events


def test_a_record_caught_between_buffer_close_and_file_close_is_counted_lost_not_fatal(tmp_path: Path) -> None:
    """A record an abandoned source was putting when the buffer and then the file closed ends as lost (logged), not
    silently dropped, and a closed file at shutdown is not a fatal error."""
    telemetry, stopping = Telemetry("s"), threading.Event()
    fatal = FatalStop(telemetry)
    buffer = RecordBuffer(100, 10**6)
    dead_letters = DeadLetterFile(tmp_path / "dl.jsonl", "s")
    context = SourceContext("late", buffer, telemetry, dead_letters, stopping, ScriptedSink(BatchLimits(10, 10**6, 0.01)), fatal)
    buffer.close()
    dead_letters.close()
    with capture_logs() as logs:
        assert not context.emit(b"{}", {}, "late:7")
    assert telemetry.ledger.totals() == ledger(received=1, lost=1)
    lost: list[dict[str, Any]] = [e for e in logs if e["event"] == "records_lost"]
    assert lost and lost[0]["origins"] == ["late:7"] and "DeadLetterClosed" in lost[0]["why"]
    assert not fatal.triggered


def test_fatal_stop_reports_each_component_once_and_wakes_the_daemon() -> None:
    """The first failure of a component is logged as fatal_error and counted; repeats are not; the wake event is set."""
    telemetry = Telemetry("s")
    wake = threading.Event()
    fatal = FatalStop(telemetry, wake)
    with capture_logs() as logs:
        for _ in range(3):
            fatal.trigger("dead_letter_file", OSError(28, "No space left on device"))
    assert wake.is_set() and [c for c, _ in fatal.failures] == ["dead_letter_file"]
    assert [e["component"] for e in logs if e["event"] == "fatal_error"] == ["dead_letter_file"]
    assert telemetry.fatal_errors.labels(component="dead_letter_file")._value.get() == 1


def test_an_origin_from_a_non_utf8_file_name_is_written_as_valid_utf8(tmp_path: Path) -> None:
    """A file name with undecodable bytes (surrogate-escaped in Python) cannot break a dead-letter write."""
    dead = DeadLetterFile(tmp_path / "dead.jsonl", "kinesis")
    origin = "tweets-\udcff.jsonl:3"  # how os.fsdecode hands over the file name b"tweets-\xff.jsonl"
    dead.write(data=b"{", source="replay", origin=origin, reason="invalid_json", detail="bad")
    dead.close()
    (line,) = (tmp_path / "dead.jsonl").read_bytes().decode("utf-8").splitlines()
    assert json.loads(line)["origin"] == "tweets-\\udcff.jsonl:3"
