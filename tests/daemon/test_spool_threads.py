"""The spool under its three threads (source, feeder, checkpoint), group commit, stats and the hot tail's bound."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest

import daemon.spool
import daemon.spool_files
from daemon.durable import LOCAL, AppendFile, ForwardingAppendFile, LocalFileSystem
from tests.daemon.test_spool_support import NO_STOP, make_spool, read_all, record

DEADLINE_S = 30.0
SLOW_FSYNC_S = 0.02


class _SlowFsyncFile(ForwardingAppendFile):
    def __init__(self, inner: AppendFile, fs: SlowFsyncFS) -> None:
        self._inner, self._fs = inner, fs

    def fsync(self) -> None:
        self._fs.started.set()
        time.sleep(SLOW_FSYNC_S)  # a slow disk
        self._inner.fsync()
        with self._fs.lock:
            self._fs.fsyncs += 1


class SlowFsyncFS(LocalFileSystem):
    """The local disk with an fsync that takes SLOW_FSYNC_S."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.lock = threading.Lock()
        self.started = threading.Event()

    def open_append(self, path: Path) -> AppendFile:
        return _SlowFsyncFile(super().open_append(path), self)


def test_batch_fsync_groups_appends_and_the_appender_never_waits_for_it(tmp_path: Path) -> None:
    """fsync=batch on a slow disk: 2000 appends take far less than one fsync each, and far fewer fsyncs cover them all."""
    fs = SlowFsyncFS()
    spool, events = make_spool(tmp_path, fs, fsync="batch")
    spool.open()
    total = 2000
    started = time.monotonic()
    for n in range(total):
        spool.append(record(n), None, str(n), NO_STOP)
    appending_s = time.monotonic() - started
    assert appending_s < total * SLOW_FSYNC_S / 10
    assert fs.started.wait(DEADLINE_S)  # the syncer thread fsyncs on its own, unasked
    assert spool.wait_durable(DEADLINE_S)
    assert 1 <= fs.fsyncs < total / 10
    assert len(events.fsyncs) == fs.fsyncs
    spool.close()


def test_source_feeder_and_checkpoint_threads_together_deliver_every_record_once_in_order(tmp_path: Path) -> None:
    """Concurrent append, read and commit (batch fsync, rolling segments, disk and memory reads): each record once, in order."""
    spool, _ = make_spool(tmp_path, LOCAL, fsync="batch", segment_bytes=16 * 1024, max_bytes=256 * 1024)
    spool.open()
    total = 20000
    seen: list[int] = []
    last_position: list[list[int]] = []
    done = threading.Event()

    def source() -> None:
        for n in range(total):
            assert spool.append(record(n), n, str(n), NO_STOP)

    def feeder() -> None:
        while len(seen) < total:
            for r in spool.read(300, 1.0):
                seen.append(int(r.origin))
                assert r.event is None or r.event == int(r.origin)
                last_position[:] = [r.position]
        done.set()

    def checkpoint() -> None:
        while not done.is_set():
            if last_position:
                spool.commit(list(last_position[0]))
            spool.stats()
            done.wait(0.002)

    threads = [threading.Thread(target=f) for f in (source, feeder, checkpoint)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    assert not any(t.is_alive() for t in threads)
    assert seen == list(range(total))
    spool.commit(last_position[0])
    assert spool.stats().records == 0
    spool.close()


def test_stats_count_uncommitted_records_and_the_oldest_age(tmp_path: Path) -> None:
    """stats(): records and bytes not yet committed, the age of the oldest of them by the spool's clock."""
    now = [1000.0]
    spool, _ = make_spool(tmp_path, clock=lambda: now[0])
    spool.open()
    assert spool.stats().records == 0 and spool.stats().oldest_age_s == 0.0
    for n in range(10):
        now[0] = 1000.0 + n
        spool.append(record(n), None, str(n), NO_STOP)
    now[0] = 1100.0
    stats = spool.stats()
    assert stats.records == 10 and stats.oldest_age_s == 100.0 and stats.bytes > 10 * len(record(0))
    got = spool.read(4, 0)
    assert spool.stats().oldest_age_s == 100.0  # read but not committed: still the oldest
    spool.commit(got[-1].position)
    assert spool.stats().records == 6 and spool.stats().oldest_age_s == 96.0
    spool.close()


def test_the_hot_tail_stays_bounded_however_much_is_spooled(tmp_path: Path) -> None:
    """With a feeder far behind, memory holds at most HOT_TAIL_RECORDS records; the rest is read back from disk."""
    spool, _ = make_spool(tmp_path, segment_bytes=256 * 1024)
    spool.open()
    total = daemon.spool.HOT_TAIL_RECORDS * 5
    for n in range(total):
        spool.append(record(n) + b"y" * 1000, n, str(n), NO_STOP)
        assert len(spool._hot) <= daemon.spool.HOT_TAIL_RECORDS
    got = read_all(spool)
    assert [int(r.origin) for r in got] == list(range(total))
    assert sum(r.event is not None for r in got) == daemon.spool.HOT_TAIL_RECORDS
    spool.close()


def test_oldest_age_is_the_new_record_after_an_idle_spell_not_the_last_one_read(tmp_path: Path) -> None:
    """After everything was committed and time passed, a new record (in a new segment, off memory) is 0 s old."""
    now = [1000.0]
    spool, _ = make_spool(tmp_path, segment_bytes=4096, clock=lambda: now[0])
    spool.open()
    for n in range(200):
        spool.append(record(n), None, str(n), NO_STOP)
    got = read_all(spool)
    spool.commit(got[-1].position)
    now[0] = 5000.0
    saved = daemon.spool.HOT_TAIL_RECORDS
    daemon.spool.HOT_TAIL_RECORDS = 0  # nothing in memory: the age must come from the segment
    try:
        for n in range(200, 400):
            spool.append(record(n), None, str(n), NO_STOP)
    finally:
        daemon.spool.HOT_TAIL_RECORDS = saved
    now[0] = 5010.0
    assert spool.stats().oldest_age_s == 10.0
    spool.close()


class _FailingOnceFile:
    def __init__(self, inner: AppendFile, fs: FsyncFailsOnceFS) -> None:
        self._inner, self._fs = inner, fs

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def fsync(self) -> None:
        if self._fs.failures:
            self._fs.failures -= 1
            raise self._fs.error
        self._inner.fsync()

    def close(self) -> None:
        self._inner.close()


class FsyncFailsOnceFS(LocalFileSystem):
    """The local disk whose first fsyncs fail with `error` (an OSError, or a bug's exception)."""

    def __init__(self, error: Exception, failures: int = 1) -> None:
        self.error, self.failures = error, failures

    def open_append(self, path: Path) -> AppendFile:
        return _FailingOnceFile(super().open_append(path), self)


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), ValueError("a bug under the spool")])
def test_the_batch_syncer_survives_a_failed_round_and_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """A failed fsync round (EIO, or an unexpected exception) is reported; the syncer retries unasked and catches up."""
    monkeypatch.setattr(daemon.spool_files, "SYNC_RETRY_S", 0.05)
    spool, events = make_spool(tmp_path, FsyncFailsOnceFS(error), fsync="batch")
    spool.open()
    spool.append(b"only one", None, "o", NO_STOP)  # no later append to wake the syncer again
    assert spool.wait_durable(DEADLINE_S)
    assert len(events.write_failed) == 1
    assert events.fsyncs
    spool.close()
