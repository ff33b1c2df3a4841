"""A Hypothesis state machine of the spool against a model: a list of uncommitted records and a read count."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import daemon.spool
from daemon.spool import Spool
from daemon.spool_segments import HEADER_BYTES, encode_frame
from tests.daemon.test_spool_support import RecordedEvents, abandon, make_spool
from tests.fake_fs import PowerLossFS

# A tiny hot tail and tiny segments, so short runs read from disk and roll segments.
HOT_TAIL = 6
SEGMENT_BYTES = 4096
# fsync on tmpfs is free: the model counts fsyncs through PowerLossFS, it does not need the disk to flush.
FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
# Appends never wait in the machine: a full spool (block) answers False at once, as when the daemon stops.
STOPPING = threading.Event()
STOPPING.set()


class SpoolMachine(RuleBasedStateMachine):
    """Rules: append, read, commit (any read position, stale ones too), sync, reopen, power loss."""

    MAX_BYTES = 1024**3
    WHEN_FULL = "block"

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="spool-model-", dir=FAST_TMP))
        self.saved_hot = daemon.spool.HOT_TAIL_RECORDS
        daemon.spool.HOT_TAIL_RECORDS = HOT_TAIL
        self.fs = PowerLossFS(self.root)
        self.spool: Spool | None = None
        self.events = RecordedEvents()
        self.spooled: list[int] = []  # ids appended and not committed, in append order
        self.read_count = 0  # of spooled, how many this run's reader took (in flight)
        self.positions: dict[int, list[int]] = {}  # id -> position, for the records read this run
        self.durable: set[int] = set()  # ids a power loss must not take
        self.committed_positions: list[list[int]] = []
        self.dropped: set[int] = set()  # reported dropped (a power loss may bring back a drop not yet durable)
        self.next_id = 0
        self.refused = 0  # appends a full spool refused

    def _make(self) -> Spool:
        spool, self.events = make_spool(
            self.root / "spool", self.fs, segment_bytes=SEGMENT_BYTES, max_bytes=self.MAX_BYTES, when_full=self.WHEN_FULL
        )
        return spool

    def _open(self) -> None:
        self.spool = self._make()
        assert self.spool.open() == len(self.spooled)
        self.read_count = 0
        self.positions = {}

    @initialize()
    def start(self) -> None:
        self._open()

    def teardown(self) -> None:
        if self.spool is not None:
            self.spool.close()
        daemon.spool.HOT_TAIL_RECORDS = self.saved_hot
        shutil.rmtree(self.root, ignore_errors=True)

    @rule(size=st.integers(min_value=0, max_value=900))
    def append(self, size: int) -> None:
        self._append(size)

    @rule(count=st.integers(min_value=2, max_value=25), size=st.integers(min_value=100, max_value=1500))
    def append_burst(self, count: int, size: int) -> None:
        for _ in range(count):
            self._append(size)

    def _append(self, size: int) -> None:
        assert self.spool is not None
        data = str(self.next_id).encode() + b":" + b"x" * size
        drops = len(self.events.dropped)
        if not self.spool.append(data, {"id": self.next_id}, str(self.next_id), STOPPING):
            assert self.MAX_BYTES < 1024**3, "only a small spool can be full"
            assert self.events.dropped[drops:] == [], "dropped, and still no room"
            if self.WHEN_FULL == "drop_oldest":  # refused only when even dropping every unread segment left no room
                files = self.spool._files
                kept = files.disk_bytes - files.droppable_bytes(self.spool._cursor[0])
                assert kept + len(encode_frame(0.0, str(self.next_id), data)) + HEADER_BYTES > self.MAX_BYTES
            self.refused += 1
            return
        for count, first, last in self.events.dropped[drops:]:
            assert first is not None and last is not None
            gone = list(range(int(first), int(last) + 1))
            assert len(gone) == count
            unread = self.spooled[self.read_count :]
            assert set(gone) <= set(unread), "a record already read was dropped"
            self.spooled = [n for n in self.spooled if n not in set(gone)]
            self.dropped.update(gone)
        self.spooled.append(self.next_id)
        self.next_id += 1

    @rule(count=st.integers(min_value=1, max_value=10))
    def read(self, count: int) -> None:
        assert self.spool is not None
        got = self.spool.read(count, 0.0)
        expected = self.spooled[self.read_count : self.read_count + count]
        ids = [int(r.origin) for r in got]
        assert ids == expected[: len(ids)]  # the next records in order: all of them, or a batch cut at memory/disk
        assert bool(ids) == bool(expected)
        for r in got:
            assert r.data.split(b":")[0] == r.origin.encode()
            assert r.event is None or r.event == {"id": int(r.origin)}
            assert all(r.position > p for p in self.positions.values())
            self.positions[int(r.origin)] = r.position
        self.read_count += len(got)

    @precondition(lambda self: self.read_count > 0)
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        assert self.spool is not None
        index = data.draw(st.integers(min_value=0, max_value=self.read_count - 1))
        position = self.positions[self.spooled[index]]
        self.spool.commit(position)
        self.committed_positions.append(position)
        del self.spooled[: index + 1]
        self.read_count -= index + 1

    @precondition(lambda self: bool(self.committed_positions))
    @rule(data=st.data())
    def commit_stale(self, data: st.DataObject) -> None:
        """Committing a position at or before the last commit changes nothing."""
        assert self.spool is not None
        self.spool.commit(data.draw(st.sampled_from(self.committed_positions)))

    @rule()
    def sync(self) -> None:
        assert self.spool is not None
        assert self.spool.sync()
        self.durable = set(self.spooled)

    @rule()
    def reopen(self) -> None:
        assert self.spool is not None
        self.spool.close()
        self.durable = set(self.spooled)
        self._open()

    @rule(torn=st.booleans())
    def power_loss(self, torn: bool) -> None:
        assert self.spool is not None
        abandon(self.spool)
        self.fs.power_loss(torn=torn)
        self.fs = PowerLossFS(self.root)
        self.spool = self._make()
        waiting = self.spool.open()
        back: list[int] = []
        while got := self.spool.read(100, 0.0):
            back.extend(int(r.origin) for r in got)
            self.positions.update((int(r.origin), r.position) for r in got)
        assert len(back) == waiting
        assert back == sorted(set(back))
        assert set(back) <= set(self.spooled) | self.dropped, "a committed record came back"
        assert self.durable & set(self.spooled) <= set(back), "a durable record was lost"
        self.spooled = back
        self.read_count = len(back)
        self.positions = {n: self.positions[n] for n in back}
        self.durable = set(back)  # what survived is on disk now

    @invariant()
    def counts_match(self) -> None:
        if self.spool is not None:
            stats = self.spool.stats()
            assert stats.records == len(self.spooled)
            assert (stats.bytes == 0) == (not self.spooled)


class SmallDropOldestMachine(SpoolMachine):
    """The same on a spool of four segments under drop_oldest: drops take only unread records, oldest first."""

    MAX_BYTES = 4 * SEGMENT_BYTES
    WHEN_FULL = "drop_oldest"


class SmallBlockMachine(SpoolMachine):
    """The same on a spool of four segments under block: a full spool refuses (stopping set), never drops."""

    MAX_BYTES = 4 * SEGMENT_BYTES
    WHEN_FULL = "block"


MODEL_SETTINGS = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestSpoolModel = SpoolMachine.TestCase
TestSpoolModel.settings = MODEL_SETTINGS
TestSmallDropOldest = SmallDropOldestMachine.TestCase
TestSmallDropOldest.settings = MODEL_SETTINGS
TestSmallBlock = SmallBlockMachine.TestCase
TestSmallBlock.settings = MODEL_SETTINGS
