"""The buffer: `max_bytes` bounds the memory buffered records really hold, and the buffer refuses entries once closed."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from pathlib import Path

from cli.sample import write_sample
from daemon.buffer import RECORD_OVERHEAD_BYTES, RecordBuffer, entry_bytes
from daemon.deadletter import DeadLetterFile
from daemon.pipeline import SourceContext
from daemon.telemetry import Telemetry
from sinks.base import Record
from sinks.batch import BatchLimits
from sinks.kinesis.config import DEFAULT_MAX_RECORD_BYTES, DEFAULT_PARTITION_KEY_PATHS
from sinks.kinesis.records import EntryBuilder, KinesisEntry
from sources.file import FileSource, FileSourceConfig
from tests.fakes import FakeEntry, ScriptedSink

WAIT_S = 20.0
# The claim: a buffer filled to max_bytes holds at most this multiple of max_bytes in memory (measured: ~1.0;
# before entries were prepared at emit time, each record kept its parsed JSON tree alive: ~7x).
MEMORY_FACTOR = 1.5
MAX_BYTES = 4 * 1024 * 1024


class KinesisShapedSink(ScriptedSink):
    """Prepares real Kinesis entries (partition key from the event), so the buffer holds what production holds."""

    def __init__(self) -> None:
        super().__init__(BatchLimits(500, 5 * 1024 * 1024, 0.1))
        self.builder = EntryBuilder(DEFAULT_PARTITION_KEY_PATHS, DEFAULT_MAX_RECORD_BYTES)

    def prepare(self, record: Record) -> KinesisEntry:  # type: ignore[override]
        return self.builder.build(record)


def test_a_full_buffer_holds_memory_within_a_small_factor_of_max_bytes(tmp_path: Path) -> None:
    """A real file source filling the buffer to max_bytes leaves at most MEMORY_FACTOR x max_bytes allocated."""
    replay = tmp_path / "tweets.jsonl"
    write_sample(replay, 20_000, seed=7)  # ~10 MiB of lines: more than the buffer takes
    buffer = RecordBuffer(max_records=10**6, max_bytes=MAX_BYTES)
    telemetry, stopping = Telemetry("kinesis"), threading.Event()
    dead_letters = DeadLetterFile(tmp_path / "dl.jsonl", "kinesis")
    ctx = SourceContext("replay", buffer, telemetry, dead_letters, stopping, KinesisShapedSink())
    source = FileSource(FileSourceConfig(paths=[str(replay)]))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        producer = threading.Thread(target=source.run, args=(ctx,))
        producer.start()
        give_up = time.monotonic() + WAIT_S
        while buffer.blocked_producers == 0:  # blocked in put: the buffer is as full as max_bytes allows
            assert producer.is_alive() and time.monotonic() < give_up, "the source never filled the buffer"
            time.sleep(0.01)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        stopping.set()
        producer.join(WAIT_S)
        dead_letters.close()
    assert buffer.size_bytes > MAX_BYTES * 0.9, "the buffer was not filled"
    assert held <= MEMORY_FACTOR * MAX_BYTES, f"{held} bytes held for max_bytes {MAX_BYTES} ({held / MAX_BYTES:.1f}x)"


def test_entry_bytes_counts_data_key_origin_and_overhead() -> None:
    """An entry weighs its entry size (data + partition key), its origin and the per-record overhead."""
    record = Record(b"x" * 100, None, "s", "f.jsonl:1")
    assert entry_bytes(FakeEntry(record, 120)) == 120 + len("f.jsonl:1") + RECORD_OVERHEAD_BYTES
    assert entry_bytes(FakeEntry(record, 0)) == 100 + len("f.jsonl:1") + RECORD_OVERHEAD_BYTES


def test_a_closed_buffer_refuses_puts_and_wakes_blocked_producers() -> None:
    """close() makes put return False at once, also for a producer already waiting for room."""
    buffer = RecordBuffer(max_records=1, max_bytes=10**6)
    never = threading.Event()
    assert buffer.put(FakeEntry(Record(b"a", None, "s", "f:1"), 1), never)
    result: list[bool] = []
    waiting = threading.Thread(target=lambda: result.append(buffer.put(FakeEntry(Record(b"b", None, "s", "f:2"), 1), never)))
    waiting.start()
    give_up = time.monotonic() + WAIT_S
    while buffer.blocked_producers == 0:
        assert time.monotonic() < give_up
        time.sleep(0.005)
    buffer.close()
    waiting.join(WAIT_S)
    assert result == [False]
    assert not buffer.put(FakeEntry(Record(b"c", None, "s", "f:3"), 1), never)
    assert [e.record.origin for e in buffer.drain()] == ["f:1"]
