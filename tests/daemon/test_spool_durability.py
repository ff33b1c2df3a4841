"""The spool under power loss (PowerLossFS) and a crash at every mutating step (CrashingFS)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daemon.durable import AppendFile, LocalFileSystem
from daemon.spool import Spool
from tests.daemon.test_spool_support import NO_STOP, abandon, make_spool, read_all, record
from tests.fake_fs import CrashingFS, PowerLossFS, SimulatedCrash

DURABLE_TIMEOUT_S = 10.0


class _NoFsyncFile:
    def __init__(self, inner: AppendFile) -> None:
        self._inner = inner

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def fsync(self) -> None:
        pass  # a process crash keeps what the kernel holds: the disk flush adds nothing here but time

    def close(self) -> None:
        self._inner.close()

    @property
    def size(self) -> int:
        return self._inner.size


class KernelFS(LocalFileSystem):
    """The local files without the disk flushes, for crash (not power loss) tests."""

    def open_append(self, path: Path) -> AppendFile:
        return _NoFsyncFile(super().open_append(path))

    def fsync_dir(self, path: Path) -> None:
        pass


KERNEL = KernelFS()


def numbers(records: list) -> list[int]:  # type: ignore[type-arg]
    return [int(r.origin) for r in records]


@pytest.mark.parametrize("torn", [False, True])
def test_power_loss_under_batch_keeps_every_record_fsynced_and_nothing_committed(tmp_path: Path, torn: bool) -> None:
    """fsync=batch: after a power loss, every record the syncer made durable is back, nothing committed is."""
    fs = PowerLossFS(tmp_path)
    spool, events = make_spool(tmp_path / "spool", fs, fsync="batch", segment_bytes=4096)
    spool.open()
    for n in range(400):
        spool.append(record(n), None, str(n), NO_STOP)
    assert spool.wait_durable(DURABLE_TIMEOUT_S)  # the syncer thread did it: the appender never fsynced
    assert events.fsyncs
    got = read_all(spool)
    spool.commit(got[149].position)
    for n in range(400, 450):  # not waited for: may or may not survive
        spool.append(record(n), None, str(n), NO_STOP)
    abandon(spool)
    fs.power_loss(torn=torn)

    again, _ = make_spool(tmp_path / "spool", PowerLossFS(tmp_path), segment_bytes=4096)
    again.open()
    back = numbers(read_all(again))
    assert back[: 400 - 150] == list(range(150, 400))
    assert back == sorted(set(back)) and all(150 <= n < 450 for n in back)
    again.close()


def test_power_loss_under_interval_keeps_what_the_last_interval_sync_covered(tmp_path: Path) -> None:
    """fsync=interval: records older than the last interval fsync survive a power loss; the source never fsynced."""
    fs = PowerLossFS(tmp_path)
    spool, events = make_spool(tmp_path / "spool", fs, fsync="interval", interval_s=0.05, segment_bytes=4096)
    spool.open()
    for n in range(300):
        spool.append(record(n), None, str(n), NO_STOP)
    assert spool.wait_durable(DURABLE_TIMEOUT_S)  # the next interval round
    for n in range(300, 320):
        spool.append(record(n), None, str(n), NO_STOP)
    abandon(spool)
    fs.power_loss()
    again, _ = make_spool(tmp_path / "spool", PowerLossFS(tmp_path), segment_bytes=4096)
    again.open()
    back = numbers(read_all(again))
    assert back[:300] == list(range(300)) and back == sorted(set(back))
    assert events.fsyncs
    again.close()


def test_power_loss_before_any_fsync_keeps_the_commit(tmp_path: Path) -> None:
    """A control: with no fsync after the appends, a power loss may take them all; a durable commit still holds."""
    fs = PowerLossFS(tmp_path)
    spool, _ = make_spool(tmp_path / "spool", fs)
    spool.open()
    for n in range(20):
        spool.append(record(n), None, str(n), NO_STOP)
    spool.sync()
    got = read_all(spool)
    spool.commit(got[9].position)
    for n in range(20, 40):
        spool.append(record(n), None, str(n), NO_STOP)
    abandon(spool)
    fs.power_loss()
    again, _ = make_spool(tmp_path / "spool", PowerLossFS(tmp_path))
    again.open()
    assert numbers(read_all(again)) == list(range(10, 20))  # the unsynced 20..39 are gone, as POSIX allows
    again.close()


# ---------------------------------------------------------------------------------------------- crash at each step


class Script:
    """A fixed run of open, appends (rolling segments), reads, commits and syncs; it records what returned."""

    def __init__(self) -> None:
        self.appended: list[int] = []  # appends that returned
        self.committed = -1  # the last record covered by a commit() that returned
        self.committing = -1  # the last record covered by the commit() in progress (may or may not be durable)

    def run(self, spool: Spool) -> None:
        spool.open()
        read: list = []  # type: ignore[type-arg]
        n = 0
        for burst, commit_at in ((40, 10), (40, 60), (30, 109)):
            for _ in range(burst):
                assert spool.append(record(n) * 3, None, str(n), NO_STOP)
                self.appended.append(n)
                n += 1
            read.extend(read_all(spool))
            self.committing = commit_at
            spool.commit(read[commit_at].position)
            self.committed = commit_at
            spool.sync()
        spool.close()


def test_a_crash_at_any_step_leaves_a_spool_that_opens_and_is_consistent(tmp_path: Path) -> None:
    """Crash before each mutating call (torn writes too): reopening succeeds, no duplicate, no committed record back,
    every record whose append returned is there unless committed."""
    clean = CrashingFS(KERNEL, crash_at=None)
    Script().run(make_spool(tmp_path / "count", clean, segment_bytes=4096)[0])
    steps = clean.steps()
    assert steps > 100 and {"open_append", "write", "fsync", "replace", "fsync_dir", "unlink"} <= set(clean.calls)
    for crash_at in range(1, steps + 1):
        for torn in (False, True):
            directory = tmp_path / f"crash-{crash_at}-{torn}"
            fs = CrashingFS(KERNEL, crash_at=crash_at, writes_torn=torn)
            script = Script()
            spool, _ = make_spool(directory, fs, segment_bytes=4096)
            with pytest.raises(SimulatedCrash):
                script.run(spool)
            abandon(spool)
            again, _ = make_spool(directory, segment_bytes=4096)
            again.open()
            back = numbers(read_all(again))
            where = f"crash at step {crash_at} ({fs.calls[-1]}, torn={torn})"
            assert back == sorted(set(back)), where
            assert all(n > script.committed for n in back), where
            required = [n for n in script.appended if n > script.committing]
            assert set(required) <= set(back), where
            assert set(back) <= set(range(len(script.appended) + 1)), where
            # New appends after the restart come after everything replayed.
            again.append(b"after", None, "after", NO_STOP)
            assert read_all(again)[-1].data == b"after", where
            again.close()
            shutil.rmtree(directory)


def test_a_crash_during_recovery_is_recovered_from_too(tmp_path: Path) -> None:
    """A torn spool whose recovery (cut, fsync, unlink) itself crashes at any step still opens the next time, intact."""
    base = tmp_path / "base"
    spool, _ = make_spool(base, segment_bytes=4096)
    spool.open()
    for n in range(100):
        spool.append(record(n), None, str(n), NO_STOP)
    spool.commit(read_all(spool)[29].position)
    abandon(spool)
    last = max(base.glob("*.seg"))
    with last.open("ab") as handle:
        handle.write(b"\x00\x00\x01\x00torn")  # a frame header claiming 256 bytes, then nothing
    shutil.copytree(base, tmp_path / "count")
    clean = CrashingFS(KERNEL, crash_at=None)
    first, events = make_spool(tmp_path / "count", clean, segment_bytes=4096)
    first.open()
    abandon(first)
    assert events.corrupt and "truncate" in clean.calls
    for crash_at in range(1, clean.steps() + 1):
        directory = tmp_path / f"recover-{crash_at}"
        shutil.copytree(base, directory)
        fs = CrashingFS(KERNEL, crash_at=crash_at)
        crashing, _ = make_spool(directory, fs, segment_bytes=4096)
        with pytest.raises(SimulatedCrash):
            crashing.open()
        abandon(crashing)
        again, _ = make_spool(directory, segment_bytes=4096)
        assert again.open() == 70, f"crash at recovery step {crash_at} ({fs.calls[-1]})"
        assert numbers(read_all(again)) == list(range(30, 100))
        again.close()
