"""A full spool and disk errors: block, drop_oldest, ENOSPC and EIO (daemon/spool.py)."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from typing import BinaryIO

import pytest

import daemon.spool
import daemon.spool_reading
from daemon.durable import LOCAL, AppendFile, FileSystem, ForwardingAppendFile, LocalFileSystem
from tests.daemon.test_spool_support import NO_STOP, abandon, make_spool, read_all, record
from tests.fake_fs import FaultyFS

# 4 segments of 4 KiB: a spool that fills after ~300 small records.
SMALL = 16 * 1024
DEADLINE_S = 10.0


@pytest.fixture(autouse=True)
def _fast_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon.spool_reading, "SPOOL_RETRY_S", 0.05)


def fill(spool: daemon.spool.Spool, start: int = 0) -> int:
    """Append until the spool is full (an append with `stopping` set returns False); returns the next number."""
    stop = threading.Event()
    stop.set()
    n = start
    while spool.append(record(n), None, f"o{n}", stop):
        n += 1
    return n


def wait_until(predicate: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def append_then_set(spool: daemon.spool.Spool, data: bytes, origin: str, done: threading.Event) -> None:
    assert spool.append(data, None, origin, NO_STOP)
    done.set()


def test_block_stays_within_max_bytes_and_resumes_after_a_commit(tmp_path: Path) -> None:
    """When full, append waits (time reported) until a commit frees a segment, then the record is spooled."""
    spool, events = make_spool(tmp_path, max_bytes=SMALL, segment_bytes=SMALL)
    spool.open()
    appended = fill(spool)
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert on_disk <= SMALL
    assert spool.stats().disk_bytes == on_disk
    done = threading.Event()
    result: list[bool] = []

    def blocked_append() -> None:
        result.append(spool.append(record(appended), None, "late", NO_STOP))
        done.set()

    thread = threading.Thread(target=blocked_append)
    thread.start()
    assert not done.wait(0.3)  # still blocked: nothing was committed
    got = read_all(spool)
    assert [r.data for r in got] == [record(n) for n in range(appended)]
    spool.commit(got[-1].position)
    assert done.wait(DEADLINE_S)
    thread.join()
    assert result == [True]
    assert [r.data for r in read_all(spool)] == [record(appended)]
    assert sum(events.blocked) >= 0.25  # it waited at least the 0.3 s above, less its thread start
    spool.close()


def test_blocked_append_returns_false_once_stopping_is_set(tmp_path: Path) -> None:
    """A full spool under block releases the source thread with False when the daemon stops; nothing is written."""
    spool, _ = make_spool(tmp_path, max_bytes=SMALL, segment_bytes=SMALL)
    spool.open()
    appended = fill(spool)
    stopping = threading.Event()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(spool.append(b"x" * 200, None, "o", stopping)))
    thread.start()
    thread.join(0.2)
    assert thread.is_alive()
    stopping.set()
    thread.join(DEADLINE_S)
    assert result == [False]
    assert len(read_all(spool)) == appended
    spool.close()


def test_drop_oldest_drops_the_oldest_unread_and_reports_them(tmp_path: Path) -> None:
    """drop_oldest: appends never block; whole unread segments go oldest first, counted with their first/last origin."""
    spool, events = make_spool(tmp_path, max_bytes=SMALL, segment_bytes=SMALL, when_full="drop_oldest")
    spool.open()
    for n in range(5):
        spool.append(record(n), None, f"o{n}", NO_STOP)
    in_flight = spool.read(5, 0)  # read, not committed: the reader's segment is never dropped
    assert len(in_flight) == 5
    total = 1500
    for n in range(5, total):
        assert spool.append(record(n), None, f"o{n}", NO_STOP)
    assert events.dropped
    dropped = sum(count for count, _, _ in events.dropped)
    rest = [int(r.origin[1:]) for r in read_all(spool)]
    assert rest == sorted(rest)
    assert rest[-1] == total - 1  # the newest are kept
    missing = sorted(set(range(5, total)) - set(rest))
    assert len(missing) == dropped
    # Each report names the first and last origin of a dropped run; together they are exactly the missing ones.
    runs = [(int(a[1:]), int(b[1:])) for _, a, b in events.dropped if a and b]
    assert [n for lo, hi in runs for n in range(lo, hi + 1)] == missing
    assert [count for count, _, _ in events.dropped] == [hi - lo + 1 for lo, hi in runs]
    assert missing[0] > 5  # the unread rest of the reader's segment was kept, it is next to be sent
    assert spool.stats().disk_bytes <= SMALL
    spool.close()


def test_drop_oldest_never_drops_records_already_read(tmp_path: Path) -> None:
    """Records read but not committed (in flight) are never dropped: when only they fill the spool, append blocks."""
    spool, events = make_spool(tmp_path, max_bytes=SMALL, segment_bytes=SMALL, when_full="drop_oldest")
    spool.open()
    stop = threading.Event()
    stop.set()
    n = 0
    while True:
        if not spool.append(record(n), None, "o", stop):
            break
        n += 1
        assert len(spool.read(1000, 0)) == 1  # the feeder keeps up: everything is in flight
    assert events.dropped == []
    assert spool.stats().records == n
    spool.close()


class _HalfThenENOSPC(ForwardingAppendFile):
    """A write that stores half its bytes, then fails with ENOSPC (a disk filling up mid-frame)."""

    def __init__(self, inner: AppendFile, full: threading.Event) -> None:
        self._inner, self._full = inner, full

    def write(self, data: bytes) -> None:
        if self._full.is_set():
            self._inner.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        self._inner.write(data)


class FillingFS(FaultyFS):
    """LOCAL, where writes tear and fail with ENOSPC while `full` is set (and truncate can be refused too)."""

    def __init__(self, inner: FileSystem = LOCAL) -> None:
        super().__init__(inner)
        self.full = threading.Event()

    def open_append(self, path: Path) -> AppendFile:
        return _HalfThenENOSPC(super().open_append(path), self.full)


def test_enospc_is_reported_blocks_and_resumes_without_a_torn_frame(tmp_path: Path) -> None:
    """ENOSPC mid-frame: reported, append waits and retries, succeeds once space is back; nothing torn is ever read."""
    fs = FillingFS()
    fs.faults["truncate"] = OSError(errno.ENOSPC, "No space left on device")  # the torn half stays on disk
    spool, events = make_spool(tmp_path, fs)
    spool.open()
    for n in range(10):
        spool.append(record(n), None, "o", NO_STOP)
    fs.full.set()
    done = threading.Event()
    thread = threading.Thread(target=append_then_set, args=(spool, record(10), "o", done))
    thread.start()
    wait_until(lambda: len(events.write_failed) >= 2, "the retried write to fail again")
    assert not done.is_set()
    assert all(e.errno == errno.ENOSPC for e in events.write_failed)
    fs.full.clear()
    assert done.wait(DEADLINE_S)
    thread.join()
    for n in range(11, 20):
        spool.append(record(n), None, "o", NO_STOP)
    assert [r.data for r in read_all(spool)] == [record(n) for n in range(20)]
    spool.close()
    again, events_again = make_spool(tmp_path)
    assert again.open() == 20  # the torn halves were cut (and reported), not a record lost after them
    assert [r.data for r in read_all(again)] == [record(n) for n in range(20)]
    assert events_again.corrupt and all("cut" in detail for _, _, detail in events_again.corrupt)
    again.close()


def test_enospc_under_drop_oldest_drops_unread_segments(tmp_path: Path) -> None:
    """A disk that is full for other reasons (ENOSPC): drop_oldest still drops the oldest unread segment per retry."""
    fs = FaultyFS(LOCAL)
    spool, events = make_spool(tmp_path, fs, segment_bytes=4096, when_full="drop_oldest")
    spool.open()
    for n in range(300):
        spool.append(record(n), None, f"o{n}", NO_STOP)
    spool.read(1, 0)
    fs.faults["write"] = OSError(errno.ENOSPC, "No space left on device")
    done = threading.Event()
    thread = threading.Thread(target=append_then_set, args=(spool, record(300), "o300", done))
    thread.start()
    wait_until(lambda: bool(events.dropped), "a drop")
    del fs.faults["write"]
    assert done.wait(DEADLINE_S)
    thread.join()
    rest = read_all(spool)
    assert rest[-1].data == record(300)
    assert len(rest) + 1 + sum(count for count, _, _ in events.dropped) == 301
    spool.close()


def test_fsync_failure_is_reported_and_appends_go_on(tmp_path: Path) -> None:
    """EIO from fsync: reported as a write failure, sync() says not durable; appends keep working and sync recovers."""
    fs = FaultyFS(LOCAL)
    spool, events = make_spool(tmp_path, fs)
    spool.open()
    spool.append(b"a", None, "o", NO_STOP)
    fs.faults["fsync"] = OSError(errno.EIO, "Input/output error")
    assert spool.sync() is False
    assert events.write_failed and events.write_failed[0].errno == errno.EIO
    assert spool.append(b"b", None, "o", NO_STOP)
    del fs.faults["fsync"]
    assert spool.sync() is True
    assert [r.data for r in read_all(spool)] == [b"a", b"b"]
    spool.close()


def test_a_failed_commit_write_still_frees_the_segments_behind_it(tmp_path: Path) -> None:
    """A commit file that cannot be written is reported; the done segments are deleted anyway (room on a full
    disk), the next commit writes the file, and a reopen in between replays only surviving records."""
    fs = FaultyFS(LOCAL)
    spool, events = make_spool(tmp_path, fs, segment_bytes=4096)
    spool.open()
    for n in range(200):
        spool.append(record(n), None, "o", NO_STOP)
    got = read_all(spool)
    fs.faults["write"] = OSError(errno.ENOSPC, "No space left on device")
    spool.commit(got[150].position)
    assert [e.errno for e in events.write_failed] == [errno.ENOSPC]
    assert spool.stats().records == 49
    surviving = sorted(tmp_path.glob("*.seg"))
    assert int(surviving[0].name.split(".")[0]) == got[150].position[0]  # the segments before it are gone
    abandon(spool)

    again, _ = make_spool(tmp_path, segment_bytes=4096)
    waiting = again.open()  # the old commit (none): the whole surviving segment again, nothing lost
    replayed = read_all(again)
    assert [r.data for r in replayed][-49:] == [record(n) for n in range(151, 200)]
    assert waiting == len(replayed) and len(replayed) < 200
    again.commit(replayed[-1].position)  # this time the commit file is written
    again.close()
    final, _ = make_spool(tmp_path, segment_bytes=4096)
    assert final.open() == 0
    final.close()


class FlakyReadFS(LocalFileSystem):
    """The local disk, where opening a file for reading fails `failures` times (EMFILE: out of descriptors)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def open_read(self, path: Path) -> BinaryIO:
        if self.failures > 0:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().open_read(path)


def test_a_failed_disk_read_is_reported_and_retried_skipping_nothing(tmp_path: Path) -> None:
    """A read error (not bad bytes) costs no record: reported, retried after SPOOL_RETRY_S, then everything in order."""
    spool_with_records, _ = make_spool(tmp_path)
    spool_with_records.open()
    for n in range(100):
        spool_with_records.append(record(n), None, str(n), NO_STOP)
    spool_with_records.close()
    fs = FlakyReadFS(failures=0)
    spool, events = make_spool(tmp_path, fs)
    spool.open()  # recovery reads through open_read too: it must not fail here
    fs.failures = 2
    got: list[int] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < 100 and time.monotonic() < deadline:
        got.extend(int(r.origin) for r in spool.read(1000, 0.2))
    assert got == list(range(100))
    assert len(events.corrupt) == 2 and all("read failed" in detail for _, _, detail in events.corrupt)
    spool.close()


def test_a_read_only_state_directory_is_reported_never_raised(tmp_path: Path) -> None:
    """EROFS when a segment is created: append reports it and waits (False once stopping); appends work once it clears."""
    fs = FaultyFS(LOCAL)
    spool, events = make_spool(tmp_path, fs)
    spool.open()
    fs.faults["open_append"] = OSError(errno.EROFS, "Read-only file system")
    stopping = threading.Event()
    stopping.set()
    assert spool.append(b"a", None, "o", stopping) is False
    assert [e.errno for e in events.write_failed] == [errno.EROFS]
    del fs.faults["open_append"]
    wait_until(lambda: spool.append(b"b", None, "o", stopping), "the append to go through")
    assert [r.data for r in read_all(spool)] == [b"b"]
    spool.close()


def test_a_long_block_is_reported_while_it_lasts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The blocked time is reported in pieces during the block (the metric moves in an outage), not only at its end."""
    monkeypatch.setattr(daemon.spool, "SPOOL_BLOCKED_REPORT_S", 0.05)
    spool, events = make_spool(tmp_path, max_bytes=SMALL, segment_bytes=SMALL)
    spool.open()
    fill(spool)
    stopping = threading.Event()
    thread = threading.Thread(target=spool.append, args=(b"x" * 200, None, "o", stopping))
    thread.start()
    wait_until(lambda: len(events.blocked) >= 3, "three reports of a block in progress")
    assert thread.is_alive()
    stopping.set()
    thread.join(DEADLINE_S)
    spool.close()
