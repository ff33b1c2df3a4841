"""The dead-letter file's own failures and the shutdown edges: nothing is written into a closed or broken file, and
every record that could not be kept is counted as lost instead of vanishing."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.app import stop_and_flush
from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterClosed, DeadLetterFile, DeadLetterWriteFailed
from daemon.durable import LOCAL, AppendFile, ForwardingAppendFile, LocalFileSystem
from daemon.logs import get_logger
from daemon.pipeline import FatalStop, SinkWorker, SourceContext
from daemon.supervisor import SourceSupervisor
from daemon.telemetry import Telemetry
from sinks.batch import BatchLimits
from sources.base import Source, SourceConfig
from sources.base import SourceContext as SourceContextProtocol
from tests.conftest import poll_until
from tests.fake_fs import CrashingFS, FaultyFS, PowerLossFS
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


# ------------------------------------------------------------------------------------------ durability (state.fsync)


def origins_in(path: Path) -> list[str]:
    """Origins of the complete lines in the file (a power loss may leave a torn last line without its newline)."""
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    return [json.loads(entry)["origin"] for entry in complete.splitlines()]


class FsyncCounter:
    """An on_fsync callback that counts."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_a_bad_policy_is_refused() -> None:
    """An unknown fsync policy is a ValueError, not a file that never syncs."""
    with pytest.raises(ValueError, match="fsync must be one of"):
        DeadLetterFile(Path("/dev/null"), "s", fsync="never")


def test_by_default_every_write_that_returned_survives_a_power_loss(tmp_path: Path) -> None:
    """Four threads write concurrently into a new file in a new directory (default policy: batch); after a power
    loss (torn tail) every line whose write returned is there - the directory and file entries included - and the
    group commit used fewer fsyncs than writes."""
    power, fsyncs = PowerLossFS(tmp_path), FsyncCounter()
    dead = DeadLetterFile(tmp_path / "state" / "dl.jsonl", "s", fs=power, on_fsync=fsyncs)
    returned: list[str] = []

    def writer(name: str) -> None:
        for number in range(50):
            line(dead, f"{name}:{number}")
            returned.append(f"{name}:{number}")

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert len(returned) == 200
    power.power_loss(torn=True)
    assert set(origins_in(tmp_path / "state" / "dl.jsonl")) >= set(returned)
    assert 0 < fsyncs.count <= 200


def test_under_interval_only_lines_before_the_last_sync_are_guaranteed(tmp_path: Path) -> None:
    """fsync=interval: write returns before any fsync, so a power loss keeps the lines before the last sync()
    and drops the later ones (the documented power-loss window)."""
    power = PowerLossFS(tmp_path)
    (tmp_path / "dl.jsonl").write_bytes(b"")  # an existing file: its entry is durable
    dead = DeadLetterFile(tmp_path / "dl.jsonl", "s", fsync="interval", fsync_interval_s=3600, fs=power)
    line(dead, "a:1")
    line(dead, "a:2")
    dead.sync()
    line(dead, "a:3")
    assert origins_in(tmp_path / "dl.jsonl") == ["a:1", "a:2", "a:3"]  # all in the kernel: a crash keeps them
    power.power_loss()
    assert origins_in(tmp_path / "dl.jsonl") == ["a:1", "a:2"]


def test_under_interval_the_thread_fsyncs_and_close_fsyncs_the_rest(tmp_path: Path) -> None:
    """The interval thread makes a line durable without any sync() call, and close does a last fsync."""
    power, fsyncs = PowerLossFS(tmp_path), FsyncCounter()
    dead = DeadLetterFile(tmp_path / "ticking.jsonl", "s", fsync="interval", fsync_interval_s=0.05, fs=power, on_fsync=fsyncs)
    line(dead, "t:1")
    poll_until(lambda: fsyncs.count >= 1, WAIT_S, "the interval fsync")
    dead.close()
    slow = DeadLetterFile(tmp_path / "closing.jsonl", "s", fsync="interval", fsync_interval_s=3600, fs=power)
    line(slow, "c:1")
    slow.close()
    power.power_loss()
    assert origins_in(tmp_path / "ticking.jsonl") == ["t:1"]
    assert origins_in(tmp_path / "closing.jsonl") == ["c:1"]


def test_a_non_durable_write_is_acknowledged_only_once_an_fsync_covered_it(tmp_path: Path) -> None:
    """durable=False returns without an fsync and its after_sync waits: a power loss then loses the line and it was
    never acknowledged; once sync() (or a later durable write) covered it, the callback runs and the line survives."""
    (tmp_path / "dl.jsonl").write_bytes(b"")
    power, fsyncs, acknowledged = PowerLossFS(tmp_path), FsyncCounter(), []
    dead = DeadLetterFile(tmp_path / "dl.jsonl", "s", fs=power, on_fsync=fsyncs)
    dead.write(
        data=b"x", source="s", origin="r:1", reason="r", detail="d", durable=False, after_sync=lambda: acknowledged.append("r:1")
    )
    assert fsyncs.count == 0 and acknowledged == []
    power.power_loss()
    assert origins_in(tmp_path / "dl.jsonl") == []  # lost, but nobody was told it was kept
    power = PowerLossFS(tmp_path)
    dead = DeadLetterFile(tmp_path / "dl.jsonl", "s", fs=power, on_fsync=fsyncs)
    dead.write(
        data=b"x", source="s", origin="r:2", reason="r", detail="d", durable=False, after_sync=lambda: acknowledged.append("r:2")
    )
    dead.sync()
    assert acknowledged == ["r:2"]
    dead.write(
        data=b"x", source="s", origin="r:3", reason="r", detail="d", durable=False, after_sync=lambda: acknowledged.append("r:3")
    )
    line(dead, "d:4")  # a durable write's fsync covers the earlier line too
    assert acknowledged == ["r:2", "r:3"]
    power.power_loss()
    assert origins_in(tmp_path / "dl.jsonl") == ["r:2", "r:3", "d:4"]


def test_write_many_is_one_write_and_one_fsync(tmp_path: Path) -> None:
    """write_many appends all its lines in one write call covered by one fsync, in order."""
    counter = CrashingFS(LOCAL, crash_at=None)
    dead = DeadLetterFile(tmp_path / "dl.jsonl", "s", fs=counter)
    before = counter.steps()
    dead.write_many([(b"{}", "s", f"m:{n}", "r", "d") for n in range(3)])
    assert counter.calls[before:] == ["write", "fsync"]
    dead.close()
    assert origins_in(tmp_path / "dl.jsonl") == ["m:0", "m:1", "m:2"]


class GatedAppendFile(ForwardingAppendFile):
    """An append file whose fsync blocks until the gate opens (a slow disk), counting fsyncs."""

    def __init__(self, fs: GatedFS, inner: AppendFile) -> None:
        self._fs, self._inner = fs, inner

    def fsync(self) -> None:
        self._fs.entered.set()
        assert self._fs.release.wait(WAIT_S * 2)
        self._fs.fsyncs += 1
        self._inner.fsync()


class GatedFS(LocalFileSystem):
    def __init__(self) -> None:
        self.entered, self.release, self.fsyncs = threading.Event(), threading.Event(), 0

    def open_append(self, path: Path) -> AppendFile:
        return GatedAppendFile(self, super().open_append(path))


def test_batch_writers_wait_for_their_fsync_and_share_the_next_one(tmp_path: Path) -> None:
    """While one fsync is stuck, nine more writers append and wait (none returns before an fsync covered its line);
    once it finishes, a single further fsync releases all nine (group commit)."""
    fs = GatedFS()
    dead = DeadLetterFile(tmp_path / "dl.jsonl", "s", fs=fs)
    returned: list[str] = []

    def writer(origin: str) -> None:
        line(dead, origin)
        returned.append(origin)

    threads = [threading.Thread(target=writer, args=("first",))]
    threads[0].start()
    assert fs.entered.wait(WAIT_S)
    threads += [threading.Thread(target=writer, args=(f"later:{n}",)) for n in range(9)]
    for thread in threads[1:]:
        thread.start()
    poll_until(lambda: len(origins_in(tmp_path / "dl.jsonl")) == 10, WAIT_S, "ten lines in the kernel")
    assert returned == []
    fs.release.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert sorted(returned) == sorted(["first", *(f"later:{n}" for n in range(9))])
    assert fs.fsyncs == 2
    dead.close()


@pytest.mark.parametrize("policy", ["batch", "interval"])
def test_a_failed_fsync_breaks_the_file_like_a_failed_write(tmp_path: Path, policy: str) -> None:
    """An fsync that fails with EIO (injected) is a DeadLetterWriteFailed - raised by the write itself under batch,
    by the next write under interval - and the file refuses every later write and sync()."""
    faulty = FaultyFS(LOCAL)
    dead = DeadLetterFile(tmp_path / "dl.jsonl", "s", fsync=policy, fsync_interval_s=0.05, fs=faulty)
    faulty.faults["fsync"] = OSError(errno.EIO, os.strerror(errno.EIO))
    if policy == "batch":
        with pytest.raises(DeadLetterWriteFailed, match="Input/output error") as first:
            line(dead, "a:1")
        assert isinstance(first.value.__cause__, OSError)
    else:
        line(dead, "a:1")  # returns at once: the fsync comes later, on the thread
        poll_until(lambda: dead.failure is not None, WAIT_S, "the interval fsync to fail")
    with pytest.raises(DeadLetterWriteFailed, match="failed earlier"):
        line(dead, "a:2")
    with pytest.raises(DeadLetterWriteFailed):
        dead.sync()
    del faulty.faults["fsync"]
    with pytest.raises(DeadLetterWriteFailed):  # a broken file stays broken: its lost lines were reported once
        line(dead, "a:3")
    dead.close()
    assert faulty.failed["fsync"] == 1 and origins_in(tmp_path / "dl.jsonl") == ["a:1"]
