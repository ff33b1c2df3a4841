"""Supervision: a crashing source is restarted with backoff, never stopped by one input, and never loops."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sources.file_formats
from daemon.buffer import RecordBuffer
from daemon.deadletter import DeadLetterFile
from daemon.pipeline import FatalStop, SinkWorker, SourceContext
from daemon.supervisor import REASON_SOURCE_CRASH, SourceSupervisor
from daemon.telemetry import Telemetry
from sinks.batch import BatchLimits
from sources.base import SOURCE_TYPES, SkippedInput, Source, SourceConfig, register_source
from sources.base import SourceContext as SourceContextProtocol
from sources.file import FileSource, FileSourceConfig
from tests.conftest import poll_until
from tests.fakes import ScriptedSink, ledger

WAIT_S = 5.0


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    poll_until(condition, timeout, "the condition", interval=0.005)


class FlakySource(Source):
    """Crashes `crashes` times, then emits `count` records and finishes; `crashed` is set at each crash."""

    config_model = SourceConfig

    def __init__(self, crashes: int, count: int) -> None:
        super().__init__(SourceConfig(type="flaky"))
        self.crashes = crashes
        self.count = count
        self.runs = 0
        self.crashed = threading.Event()

    def run(self, ctx: SourceContextProtocol) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            self.crashed.set()
            raise RuntimeError(f"boom {self.runs}")
        for n in range(self.count):
            if not ctx.emit(b"{}", {}, f"flaky:{n}"):
                return


class Rig:
    """Telemetry, buffer, dead-letter file and a worker shipping into a scripted sink."""

    def __init__(self, tmp_path: Path) -> None:
        self.telemetry = Telemetry("s")
        self.buffer = RecordBuffer(1000, 10**6)
        self.stopping = threading.Event()
        self.fatal = FatalStop(self.telemetry)
        self.sink = ScriptedSink(BatchLimits(50, 10**6, 0.01))
        self.path = tmp_path / "dl.jsonl"
        self.dead_letters = DeadLetterFile(self.path, "s")

    def supervise(self, source: Source, name: str, backoff_s: float = 0.05) -> SourceSupervisor:
        context = SourceContext(name, self.buffer, self.telemetry, self.dead_letters, self.stopping, self.sink, self.fatal)
        return SourceSupervisor(
            source,
            context,
            self.telemetry,
            self.stopping,
            initial_backoff_s=backoff_s,
            max_backoff_s=4 * backoff_s,
            fatal=self.fatal,
        )

    def deliver(self, *sources: tuple[Source, str]) -> list[SourceSupervisor]:
        """Run the sources to their end through a real worker; returns their (finished) supervisors."""
        worker = SinkWorker(self.sink, self.buffer, self.telemetry, self.dead_letters, self.fatal)
        worker.start()
        supervisors = [self.supervise(source, name) for source, name in sources]
        for s in supervisors:
            s.start()
        assert all(s.join(WAIT_S) for s in supervisors)
        worker.finish(WAIT_S)
        self.dead_letters.close()
        return supervisors

    def sent_origins(self) -> list[str]:
        return [r.origin for batch in self.sink.batches for r in batch]

    def dead(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines()]


def test_crashing_source_is_restarted_and_others_keep_running(tmp_path: Path) -> None:
    """A source that crashes twice runs a third time and delivers; a healthy neighbour is unaffected."""
    rig = Rig(tmp_path)
    flaky, steady = FlakySource(crashes=2, count=5), FlakySource(crashes=0, count=7)
    supervisors = rig.deliver((flaky, "flaky"), (steady, "steady"))
    assert flaky.runs == 3 and steady.runs == 1
    assert rig.telemetry.ledger.received == {"flaky": 5, "steady": 7}
    assert rig.telemetry.source_restarts.labels(source="flaky")._value.get() == 2
    assert all(s.ended_cleanly.is_set() for s in supervisors) and not rig.fatal.triggered


def test_stop_interrupts_the_restart_backoff(tmp_path: Path) -> None:
    """A source waiting out its restart delay (it did crash) stops at once when the daemon stops."""
    rig = Rig(tmp_path)
    source = FlakySource(crashes=1000, count=0)
    supervisor = rig.supervise(source, "dead", backoff_s=30.0)
    supervisor.start()
    assert source.crashed.wait(WAIT_S)
    # The restart counter is bumped just before the backoff wait begins: from here it is waiting 15-30 s.
    wait_until(lambda: rig.telemetry.source_restarts.labels(source="dead")._value.get() == 1)
    stopped_at = time.monotonic()
    rig.stopping.set()
    assert supervisor.join(2)
    assert time.monotonic() - stopped_at < 2
    assert source.runs == 1 and supervisor.ended_cleanly.is_set()


class PoisonConfig(SourceConfig):
    type: Literal["poison"] = "poison"
    items: list[str]
    poison: str


class PoisonSource(Source):
    """Emits `items` in order, with positions; raises whenever it reaches the `poison` item."""

    config_model = PoisonConfig
    config: PoisonConfig

    def __init__(self, config: PoisonConfig) -> None:
        super().__init__(config)
        self.next = 0
        self.runs = 0

    def run(self, ctx: SourceContextProtocol) -> None:
        self.runs += 1
        while self.next < len(self.config.items):
            item = self.config.items[self.next]
            if item == self.config.poison:
                raise ValueError(f"cannot handle {item!r}")
            if not ctx.emit(item.encode(), {"item": item}, f"poison:{self.next}"):
                return
            self.next += 1

    def position(self) -> Hashable | None:
        return self.next

    def skip(self, position: Hashable) -> SkippedInput | None:
        assert position == self.next
        self.next += 1
        return SkippedInput(self.config.items[self.next - 1].encode(), f"poison:{self.next - 1}")


@pytest.fixture
def poison_type() -> Iterator[type[Source]]:
    """PoisonSource registered as `type: poison` for the test, unregistered after."""
    register_source(PoisonSource)
    yield SOURCE_TYPES["poison"]
    del SOURCE_TYPES["poison"]


def test_a_source_crashing_twice_at_one_input_dead_letters_it_and_goes_on(tmp_path: Path, poison_type: type[Source]) -> None:
    """The input a source keeps crashing on is dead-lettered as source_crash (raw data, the exception), every other
    record is delivered, and the source crashes exactly twice on it instead of looping."""
    rig = Rig(tmp_path)
    items = [f'"r{n}"' for n in range(10)]
    items[4] = "POISON"
    source = poison_type(PoisonConfig(items=items, poison="POISON"))
    (supervisor,) = rig.deliver((source, "p"))
    assert rig.sent_origins() == [f"poison:{n}" for n in range(10) if n != 4]
    (dead,) = rig.dead()
    assert (dead["origin"], dead["reason"], dead["data"], dead["source"]) == ("poison:4", REASON_SOURCE_CRASH, "POISON", "p")
    assert "ValueError" in dead["detail"] and "cannot handle 'POISON'" in dead["detail"]
    assert source.runs == 3, "one crash, one backoff restart, one crash (skip), then the rest"  # type: ignore[attr-defined]
    assert rig.telemetry.ledger.totals() == ledger(received=10, sent=9, dead_lettered=1)
    assert supervisor.ended_cleanly.is_set()


def test_a_file_line_whose_parse_raises_is_dead_lettered_and_the_file_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real file source whose line parser raises on one line: that line ends as source_crash, all others are sent."""
    path = tmp_path / "tweets.jsonl"
    lines = [json.dumps({"data": {"id": str(n)}}) for n in range(8)]
    lines[5] = '{"data": {"id": "explodes"}}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    real_parse = sources.file_formats.parse_json_record

    def parse(line: bytes, *args: Any, **kwargs: Any) -> Any:
        if b"explodes" in line:
            raise RecursionError("parser bug")
        return real_parse(line, *args, **kwargs)

    monkeypatch.setattr(sources.file_formats, "parse_json_record", parse)
    rig = Rig(tmp_path)
    source = FileSource(FileSourceConfig(paths=[str(path)]))
    rig.deliver((source, "replay"))
    assert rig.sent_origins() == [f"{path}:{n}" for n in range(1, 9) if n != 6]
    (dead,) = rig.dead()
    assert (dead["origin"], dead["reason"], dead["data"]) == (f"{path}:6", REASON_SOURCE_CRASH, lines[5])
    assert "RecursionError: parser bug" in dead["detail"]
    assert rig.telemetry.source_restarts.labels(source="replay")._value.get() == 2
    assert rig.telemetry.ledger.totals() == ledger(received=8, sent=7, dead_lettered=1)


def test_a_followed_file_line_whose_parse_raises_is_dead_lettered_and_following_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Following: the line the parser raises on ends as source_crash (by its byte offset), lines before and after it
    (appended later too) are each sent once, and the follower stops when the daemon does."""
    path = tmp_path / "live.jsonl"
    path.write_text('{"data": {"id": "0"}}\n{"data": {"id": "explodes"}}\n{"data": {"id": "2"}}\n', encoding="utf-8")
    real_parse = sources.file_formats.parse_json_record

    def parse(line: bytes, *args: Any, **kwargs: Any) -> Any:
        if b"explodes" in line:
            raise RecursionError("parser bug")
        return real_parse(line, *args, **kwargs)

    monkeypatch.setattr(sources.file_formats, "parse_json_record", parse)
    rig = Rig(tmp_path)
    worker = SinkWorker(rig.sink, rig.buffer, rig.telemetry, rig.dead_letters, rig.fatal)
    worker.start()
    supervisor = rig.supervise(FileSource(FileSourceConfig(paths=[str(path)], follow=True, poll_interval=0.02)), "live")
    supervisor.start()
    poll_until(lambda: rig.sent_origins() == [f"{path}:1", f"{path}:3"], WAIT_S, "lines 1 and 3 sent")
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"data": {"id": "3"}}\n')
    poll_until(lambda: rig.sent_origins() == [f"{path}:1", f"{path}:3", f"{path}:4"], WAIT_S, "the appended line sent")
    rig.stopping.set()
    assert supervisor.join(WAIT_S)
    worker.finish(WAIT_S)
    rig.dead_letters.close()
    (dead,) = rig.dead()
    assert (dead["origin"], dead["reason"], dead["data"]) == (f"{path}:2", REASON_SOURCE_CRASH, '{"data": {"id": "explodes"}}')


def test_a_crash_without_a_position_is_only_retried_with_backoff(tmp_path: Path) -> None:
    """A source without positions is never skipped: nothing is dead-lettered, it restarts until it works."""
    rig = Rig(tmp_path)
    source = FlakySource(crashes=3, count=2)
    rig.deliver((source, "flaky"))
    assert source.runs == 4 and rig.dead() == []
    assert rig.telemetry.ledger.totals()["sent"] == 2


def test_a_dead_letter_failure_in_a_file_source_is_fatal_and_counted_once(tmp_path: Path) -> None:
    """A bad line whose dead letter cannot be written is received once and lost once - not re-read in a crash loop."""
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n", encoding="utf-8")
    rig = Rig(tmp_path)
    rig.dead_letters = DeadLetterFile(Path("/dev/full"), "s")
    supervisor = rig.supervise(FileSource(FileSourceConfig(paths=[str(path)])), "replay")
    supervisor.start()
    assert supervisor.join(WAIT_S)
    assert rig.telemetry.ledger.totals() == ledger(received=1, lost=1)
    assert [c for c, _ in rig.fatal.failures] == ["dead_letter_file"]
    assert rig.telemetry.source_restarts.labels(source="replay")._value.get() == 0


def test_a_supervisor_that_fails_itself_is_fatal(tmp_path: Path) -> None:
    """A bug in the supervisor's own bookkeeping (telemetry raising) stops the daemon loudly instead of a silent dead thread."""
    rig = Rig(tmp_path)

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("gauge bug")

    rig.telemetry.source_started = broken  # type: ignore[method-assign]
    supervisor = rig.supervise(FlakySource(crashes=0, count=1), "x")
    supervisor.start()
    assert supervisor.join(WAIT_S)
    assert [c for c, _ in rig.fatal.failures] == ["source supervisor x"]
    assert not supervisor.ended_cleanly.is_set()


class _Recorder:
    """A SourceContext that records what a source hands over, in order, as (data, origin, the source's position then)."""

    name = "rec"
    stopping = False

    def __init__(self, source: FileSource) -> None:
        self.source = source
        self.handed: list[tuple[bytes, str, Hashable | None]] = []

    def emit(self, data: bytes, event: Any, origin: str, token: Any = None) -> bool:
        self.handed.append((data, origin, self.source.position()))
        return True

    def reject(self, data: bytes, origin: str, reason: str, detail: str, token: Any = None) -> None:
        self.handed.append((data, origin, self.source.position()))

    def wait(self, seconds: float) -> bool:
        return False


_LINE_PARTS = st.sampled_from([b'{"a": 1}', b"[1, 2]", b"", b"\r", b"x" * 40, b"\xff\xfe", b'"\xc3\xa9"', b" ", b"{"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.lists(_LINE_PARTS, max_size=4).map(b"".join), max_size=12), trailing_newline=st.booleans())
def test_skip_returns_exactly_the_line_the_reader_would_hand_over(
    tmp_path: Path, lines: list[bytes], trailing_newline: bool
) -> None:
    """For any file bytes (over-long, CRLF, undecodable or empty lines, no final newline), skip(position) returns the raw
    bytes and origin the reader hands over at that (file, device, inode, byte offset), moves the position on to the next
    input's (the file's end after the last), and returns None at the end of the file."""
    path = tmp_path / "any.jsonl"
    path.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline and lines else b""))
    stat = path.stat()
    config = FileSourceConfig(paths=[str(path)], max_line_bytes=32)
    reader = FileSource(config)
    recorder = _Recorder(reader)
    reader.run(recorder)  # type: ignore[arg-type]
    end = (str(path), stat.st_dev, stat.st_ino, stat.st_size)
    tokens = [token for _, _, token in recorder.handed] + [end]
    for (data, origin, token), following in zip(recorder.handed, tokens[1:], strict=True):
        source = FileSource(config)
        skipped = source.skip(token)  # type: ignore[arg-type]
        assert skipped == SkippedInput(data, origin)
        source._reading = (stat.st_dev, stat.st_ino)  # as while reading it
        assert source.position() == following
    assert reader.positions()[(stat.st_dev, stat.st_ino)][:4] == end
    assert FileSource(config).skip(end) is None
