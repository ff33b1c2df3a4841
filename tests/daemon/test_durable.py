"""The file layer (daemon/durable.py) and the fakes the durability tests stand on (tests/fake_fs.py): atomic_write
leaves the old or the new content at every crash and power-loss point, and the fakes lose exactly what POSIX does
not promise - so a test passing over them means something."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.durable import LOCAL, FileSystem, atomic_write
from tests.fake_fs import CrashingFS, FaultyFS, PowerLossFS, SimulatedCrash

OLD, NEW = b'{"state": "old"}', b'{"state": "new, and longer than the old one"}'


def atomic_write_steps(tmp_path: Path) -> int:
    """How many mutating calls one atomic_write over an existing file makes."""
    (tmp_path / "count").mkdir()
    (tmp_path / "count" / "f.json").write_bytes(OLD)
    counter = CrashingFS(PowerLossFS(tmp_path / "count"), crash_at=None)
    atomic_write(counter, tmp_path / "count" / "f.json", NEW)
    return counter.steps()


Writer = Callable[[FileSystem, Path, bytes], None]


def outcomes_under_power_loss(tmp_path: Path, write: Writer, torn: bool = False) -> list[bytes]:
    """The file's content after a crash at each step of `write` (and after a clean run) followed by a power loss."""
    steps = atomic_write_steps(tmp_path)
    seen = []
    for crash_at in [*range(1, steps + 1), None]:
        root = tmp_path / f"run{crash_at}"
        root.mkdir()
        (root / "f.json").write_bytes(OLD)
        power = PowerLossFS(root)
        with contextlib.suppress(SimulatedCrash):
            write(CrashingFS(power, crash_at, writes_torn=True), root / "f.json", NEW)
        power.power_loss(torn=torn)
        seen.append((root / "f.json").read_bytes())
    return seen


def test_atomic_write_makes_the_documented_calls(tmp_path: Path) -> None:
    """One atomic_write is: open the temp file, write, fsync, rename, fsync the directory (5 crash points)."""
    (tmp_path / "f").write_bytes(OLD)
    counter = CrashingFS(LOCAL, crash_at=None)
    atomic_write(counter, tmp_path / "f", NEW)
    assert counter.calls == ["open_append", "write", "fsync", "replace", "fsync_dir"]
    assert (tmp_path / "f").read_bytes() == NEW


@pytest.mark.parametrize("torn", [False, True])
def test_atomic_write_leaves_old_or_new_content_at_every_power_loss_point(tmp_path: Path, torn: bool) -> None:
    """A crash at any step then a power loss leaves exactly the old or the new bytes, never a mix or an empty file;
    the new bytes are guaranteed once atomic_write returned."""
    seen = outcomes_under_power_loss(tmp_path, atomic_write, torn=torn)
    assert set(seen) <= {OLD, NEW}
    assert seen[-1] == NEW  # the clean run: atomic_write returned, so the new content is durable
    assert seen[0] == OLD


def test_atomic_write_leaves_old_or_new_content_at_every_crash_point(tmp_path: Path) -> None:
    """A process crash (no power loss) at any step leaves the old or the new bytes, and a later write succeeds over
    the leftover temporary file."""
    for crash_at in range(1, atomic_write_steps(tmp_path) + 1):
        root = tmp_path / f"crash{crash_at}"
        root.mkdir()
        (root / "f.json").write_bytes(OLD)
        with pytest.raises(SimulatedCrash):
            atomic_write(CrashingFS(LOCAL, crash_at, writes_torn=True), root / "f.json", NEW)
        assert (root / "f.json").read_bytes() in {OLD, NEW}
        atomic_write(LOCAL, root / "f.json", b"again")
        assert (root / "f.json").read_bytes() == b"again"
        assert sorted(p.name for p in root.iterdir()) == ["f.json"]


def unsafe_write_without_fsync(fs: FileSystem, path: Path, data: bytes) -> None:
    """atomic_write minus the file fsync: the classic bug (rename of unsynced data)."""
    tmp = path.with_name(path.name + ".tmp")
    handle = fs.open_append(tmp)
    handle.write(data)
    handle.close()
    fs.replace(tmp, path)
    fs.fsync_dir(path.parent)


def unsafe_write_in_place(fs: FileSystem, path: Path, data: bytes) -> None:
    """Truncate and rewrite the file itself: a crash between the steps leaves it empty or half written."""
    fs.truncate(path, 0)
    handle = fs.open_append(path)
    handle.write(data)
    handle.fsync()
    handle.close()


def test_the_power_loss_fake_catches_a_rename_of_unsynced_data(tmp_path: Path) -> None:
    """Control: dropping the fsync before the rename leaves an empty file after a power loss (the fake would
    catch that bug in the code under test)."""
    assert b"" in outcomes_under_power_loss(tmp_path, unsafe_write_without_fsync)


def test_the_power_loss_fake_catches_a_rewrite_in_place(tmp_path: Path) -> None:
    """Control: with keep_truncates, rewriting a file in place loses both contents at some power-loss point."""
    seen = []
    for crash_at in range(1, 6):
        root = tmp_path / f"p{crash_at}"
        root.mkdir()
        (root / "f").write_bytes(OLD)
        power = PowerLossFS(root)
        with contextlib.suppress(SimulatedCrash):
            unsafe_write_in_place(CrashingFS(power, crash_at), root / "f", NEW)
        power.power_loss(keep_truncates=True)
        seen.append((root / "f").read_bytes())
    assert b"" in seen and seen[-1] == NEW


def test_the_crash_fake_catches_a_rewrite_in_place(tmp_path: Path) -> None:
    """Control: rewriting a file in place is caught: some crash point leaves an empty or torn file."""
    seen = []
    for crash_at in range(1, 5):
        root = tmp_path / f"r{crash_at}"
        root.mkdir()
        (root / "f").write_bytes(OLD)
        with pytest.raises(SimulatedCrash):
            unsafe_write_in_place(CrashingFS(LOCAL, crash_at, writes_torn=True), root / "f", NEW)
        seen.append((root / "f").read_bytes())
    assert b"" in seen and NEW[: len(NEW) // 2] in seen


def test_a_created_file_never_dir_fsynced_vanishes_at_power_loss(tmp_path: Path) -> None:
    """A new file fsynced but whose directory was never fsynced is gone after a power loss; with fsync_dir it stays."""
    power = PowerLossFS(tmp_path)

    def create(name: str) -> None:
        handle = power.open_append(tmp_path / name)
        handle.write(b"data")
        handle.fsync()
        handle.close()

    create("lost")
    create("kept")
    power.fsync_dir(tmp_path)
    create("later")  # created after the last fsync_dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "later", "lost"]
    power.power_loss()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "lost"]
    power = PowerLossFS(tmp_path)
    create("unsynced_dir")
    power.power_loss()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "lost"]
    assert (tmp_path / "kept").read_bytes() == b"data"


def test_a_created_directory_and_its_files_vanish_unless_the_parent_was_fsynced(tmp_path: Path) -> None:
    """mkdir is an entry like a file's: until its parent is fsynced, the directory and everything in it is lost."""
    power = PowerLossFS(tmp_path)
    power.mkdir(tmp_path / "a" / "b")
    power.fsync_dir(tmp_path)  # a is durable, a/b is not
    handle = power.open_append(tmp_path / "a" / "b" / "f")
    handle.write(b"data")
    handle.fsync()
    handle.close()
    power.fsync_dir(tmp_path / "a" / "b")
    power.power_loss()
    assert (tmp_path / "a").is_dir() and not (tmp_path / "a" / "b").exists()


def test_an_fsynced_append_survives_and_an_unsynced_one_does_not(tmp_path: Path) -> None:
    """Bytes appended before an fsync survive a power loss; bytes appended after it are dropped (or, torn, cut)."""
    for torn, expected in ((False, b"synced|"), (True, b"synced|unsy")):
        (tmp_path / "log").write_bytes(b"")
        power = PowerLossFS(tmp_path)
        handle = power.open_append(tmp_path / "log")
        handle.write(b"synced|")
        handle.fsync()
        handle.write(b"unsynced")
        assert (tmp_path / "log").read_bytes() == b"synced|unsynced"  # a process crash would keep it all
        power.power_loss(torn=torn)
        assert (tmp_path / "log").read_bytes() == expected


def test_unlink_and_rename_are_undone_by_a_power_loss_until_the_directory_is_fsynced(tmp_path: Path) -> None:
    """An unlinked file comes back and a renamed one is back under its old name; after fsync_dir both stick."""
    (tmp_path / "gone").write_bytes(b"g")
    (tmp_path / "moved").write_bytes(b"m")
    power = PowerLossFS(tmp_path)
    power.unlink(tmp_path / "gone")
    power.replace(tmp_path / "moved", tmp_path / "target")
    power.power_loss()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"gone": b"g", "moved": b"m"}
    power = PowerLossFS(tmp_path)
    power.unlink(tmp_path / "gone")
    power.replace(tmp_path / "moved", tmp_path / "target")
    power.fsync_dir(tmp_path)
    power.power_loss()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"target": b"m"}


def test_a_truncate_is_durable_only_after_an_fsync(tmp_path: Path) -> None:
    """Cutting a torn tail and losing power before an fsync brings the tail back (or, keep_truncates, keeps the cut
    but nothing written after it); after an fsync it stays cut."""
    (tmp_path / "seg").write_bytes(b"goodTORN")
    power = PowerLossFS(tmp_path)
    power.truncate(tmp_path / "seg", 4)
    power.power_loss()
    assert (tmp_path / "seg").read_bytes() == b"goodTORN"
    power = PowerLossFS(tmp_path)
    power.truncate(tmp_path / "seg", 2)
    handle = power.open_append(tmp_path / "seg")
    handle.write(b"unsynced")
    power.power_loss(torn=True, keep_truncates=True)
    assert (tmp_path / "seg").read_bytes() == b"go"
    handle.close()
    (tmp_path / "seg").write_bytes(b"goodTORN")
    power = PowerLossFS(tmp_path)
    power.truncate(tmp_path / "seg", 4)
    handle = power.open_append(tmp_path / "seg")
    handle.fsync()
    handle.close()
    power.power_loss()
    assert (tmp_path / "seg").read_bytes() == b"good"


def test_a_handle_from_before_the_power_loss_refuses_to_write(tmp_path: Path) -> None:
    """A handle opened before power_loss() raises EIO instead of writing into a file the fake has rebuilt."""
    power = PowerLossFS(tmp_path)
    handle = power.open_append(tmp_path / "f")
    power.fsync_dir(tmp_path)
    power.power_loss()
    with pytest.raises(OSError) as error:
        handle.write(b"late")
    assert error.value.errno == errno.EIO
    handle.close()
    assert (tmp_path / "f").read_bytes() == b""


def test_power_loss_fs_refuses_paths_outside_its_root(tmp_path: Path) -> None:
    """A path outside the root cannot be tracked, so it is refused rather than silently made durable."""
    (tmp_path / "root").mkdir()
    with pytest.raises(ValueError, match="outside"):
        PowerLossFS(tmp_path / "root").open_append(tmp_path / "elsewhere")


def test_crashing_fs_crashes_before_the_call_and_stays_dead(tmp_path: Path) -> None:
    """The crashing call is not performed (a torn write does half), and every later mutating call raises too."""
    fs = CrashingFS(LOCAL, crash_at=3, writes_torn=True)
    handle = fs.open_append(tmp_path / "f")
    handle.write(b"0123")
    with pytest.raises(SimulatedCrash, match="step 3"):
        handle.write(b"456789")
    assert (tmp_path / "f").read_bytes() == b"0123456"
    with pytest.raises(SimulatedCrash):
        fs.mkdir(tmp_path / "d")
    assert not (tmp_path / "d").exists()
    assert fs.calls == ["open_append", "write", "write"]
    assert issubclass(SimulatedCrash, BaseException) and not issubclass(SimulatedCrash, Exception)


def test_faulty_fs_raises_the_injected_error_until_it_is_removed(tmp_path: Path) -> None:
    """An injected EIO on fsync fails each fsync (counted) without touching writes; removing it heals the layer."""
    fs = FaultyFS(LOCAL)
    fs.faults["fsync"] = OSError(errno.EIO, "Input/output error")
    handle = fs.open_append(tmp_path / "f")
    handle.write(b"data")
    for _ in range(2):
        with pytest.raises(OSError) as error:
            handle.fsync()
        assert error.value.errno == errno.EIO
    del fs.faults["fsync"]
    handle.fsync()
    handle.close()
    assert fs.failed == {"fsync": 2} and (tmp_path / "f").read_bytes() == b"data"


def test_local_files_and_directories_are_private(tmp_path: Path) -> None:
    """LOCAL creates state files 0600 and directories 0700: records may hold personal data."""
    LOCAL.mkdir(tmp_path / "state" / "spool")
    atomic_write(LOCAL, tmp_path / "state" / "f", b"x")
    assert (tmp_path / "state" / "spool").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / "f").stat().st_mode & 0o777 == 0o600
