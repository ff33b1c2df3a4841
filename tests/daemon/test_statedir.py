"""The state directory at start-up: created when missing, and a clear error (never a crash later) when a file is
in the way, the file system is read-only or full, or another daemon holds it. Read-only and full disks are real:
a tmpfs mounted in a private mount namespace (`unshare -rm`), since root ignores chmod."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.durable import LOCAL
from daemon.statedir import PROBE_PREFIX, StateDirectory, StateDirectoryError, file_safe_name
from tests.conftest import REPO
from tests.fake_fs import FaultyFS

CHILD_TIMEOUT_S = 30.0
# A tmpfs this small is filled by one write of a few pages.
TINY_TMPFS = "size=64k"

# Opens the state directory given as argv[1] and prints the outcome and what the directory holds afterwards;
# with argv[2] == "hold" it keeps the lock until stdin closes.
CHILD = """
import os, sys
from pathlib import Path
from daemon.statedir import StateDirectory, StateDirectoryError
path = Path(sys.argv[1])
state = StateDirectory(path)
try:
    state.open()
except StateDirectoryError as exc:
    print("ERROR", exc)
else:
    print("OPENED", flush=True)
    if sys.argv[2:] == ["hold"]:
        sys.stdin.read()
    state.close()
print("LISTING", sorted(os.listdir(path)) if path.is_dir() else None)
"""


def child_command(state: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", CHILD, str(state), *extra]


def child_env() -> dict[str, str]:
    return {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}


def unshare_available() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=CHILD_TIMEOUT_S).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_namespace = pytest.mark.skipif(not unshare_available(), reason="unshare -rm (user + mount namespace) unavailable")


def in_namespace(setup: str, state: Path) -> list[str]:
    """Run `setup` (shell, e.g. mounts) in a private mount namespace, then the child on `state`; its output lines."""
    script = f"set -e; {setup}; exec {shlex.join(child_command(state))}"
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_missing_directory_is_created_with_its_layout(tmp_path: Path) -> None:
    """A missing state directory (and its missing parents) is created private, with checkpoints/, spool/ and lock."""
    state = StateDirectory(tmp_path / "var" / "state")
    state.open()
    try:
        assert sorted(os.listdir(tmp_path / "var" / "state")) == ["checkpoints", "lock", "spool"]
        assert (tmp_path / "var" / "state").stat().st_mode & 0o777 == 0o700
        assert state.checkpoints == tmp_path / "var" / "state" / "checkpoints"
        assert state.spool("x/live") == tmp_path / "var" / "state" / "spool" / "x%2Flive"
        assert (tmp_path / "var" / "state" / "lock").read_text() == f"{os.getpid()}\n"
    finally:
        state.close()


def test_an_existing_directory_keeps_its_content(tmp_path: Path) -> None:
    """Opening an existing state directory leaves its files alone and removes only probe files of dead daemons."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "a.json").write_text("{}")
    (tmp_path / "dead-letter.jsonl").write_text("line\n")
    (tmp_path / f"{PROBE_PREFIX}99999").write_bytes(b"left by a crash")
    with StateDirectory(tmp_path):
        assert sorted(os.listdir(tmp_path)) == ["checkpoints", "dead-letter.jsonl", "lock", "spool"]
        assert (tmp_path / "checkpoints" / "a.json").read_text() == "{}"


def test_a_file_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    """A regular file where the directory should be, or as one of its parents, names the path and the problem."""
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(StateDirectoryError, match=r"state/: not a directory \(a file is in the way\)"):
        StateDirectory(tmp_path / "state").open()
    with pytest.raises(StateDirectoryError, match=r"state/sub/: cannot create: a parent is not a directory"):
        StateDirectory(tmp_path / "state" / "sub").open()
    assert (tmp_path / "state").read_text() == "not a directory"


@pytest.mark.slow
@needs_namespace
def test_a_read_only_state_directory_is_a_clear_error(tmp_path: Path) -> None:
    """An existing state directory on a read-only mount (a real EROFS) fails the probe and is left untouched."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    state = mount / "state"
    setup = f"mount -t tmpfs -o {TINY_TMPFS} tmpfs {mount}; mkdir {state}; echo keep > {state}/old; mount -o remount,ro {mount}"
    lines = in_namespace(setup, state)
    assert lines[0].startswith(f"ERROR {state}/: read-only file system ([Errno 30]"), lines
    assert lines[1] == "LISTING ['old']"


@pytest.mark.slow
@needs_namespace
def test_a_missing_state_directory_on_a_read_only_mount_is_a_clear_error(tmp_path: Path) -> None:
    """A state directory that cannot be created on a read-only mount says so."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    state = mount / "state"
    lines = in_namespace(f"mount -t tmpfs -o {TINY_TMPFS},ro tmpfs {mount}", state)
    assert lines[0].startswith(f"ERROR {state}/: cannot create: read-only file system ([Errno 30]"), lines
    assert lines[1] == "LISTING None"


@pytest.mark.slow
@needs_namespace
def test_a_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    """On a full file system (a real ENOSPC) the probe fails with "no space left" and leaves no probe file."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    state = mount / "state"
    setup = (
        f"mount -t tmpfs -o {TINY_TMPFS} tmpfs {mount}; mkdir {state};"
        f" head -c 1048576 /dev/zero > {mount}/filler 2>/dev/null || true"
    )
    lines = in_namespace(setup, state)
    assert lines[0].startswith(f"ERROR {state}/: no space left on device ([Errno 28]"), lines
    assert lines[1] == "LISTING []"


@pytest.mark.slow
def test_a_directory_held_by_another_daemon_names_its_pid(tmp_path: Path) -> None:
    """A second opener while a real process holds the lock gets "in use by pid N"; once that process is killed
    (-9: no cleanup) the kernel drops the lock and the directory opens."""
    holder = subprocess.Popen(
        child_command(tmp_path, "hold"),
        cwd=REPO,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "OPENED\n"
        with pytest.raises(StateDirectoryError, match=rf"/: in use by pid {holder.pid} \(another tweet-producer"):
            StateDirectory(tmp_path).open()
        holder.send_signal(signal.SIGKILL)
        holder.wait(CHILD_TIMEOUT_S)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(CHILD_TIMEOUT_S)
    with StateDirectory(tmp_path):
        assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.slow
def test_close_releases_the_lock_for_the_next_daemon(tmp_path: Path) -> None:
    """After close another process can open the directory (a restart does not find it in use)."""
    with StateDirectory(tmp_path):
        pass
    out = subprocess.run(child_command(tmp_path), cwd=REPO, env=child_env(), capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0] == "OPENED"


@pytest.mark.parametrize(
    ("call", "code", "phrase"),
    [
        ("open_append", errno.EROFS, "read-only file system"),
        ("open_append", errno.EACCES, "permission denied"),
        ("write", errno.ENOSPC, "no space left on device"),
        ("fsync", errno.EIO, "cannot write"),
    ],
)
def test_each_probe_failure_reads_clearly_and_leaves_no_probe(tmp_path: Path, call: str, code: int, phrase: str) -> None:
    """A failure at any step of the probe (injected) is a StateDirectoryError with a readable phrase and the OS
    error, no probe file remains, and the lock is not taken."""
    fs = FaultyFS(LOCAL)
    fs.faults[call] = OSError(code, os.strerror(code))
    with pytest.raises(StateDirectoryError, match=rf"/: {phrase} \(\[Errno {code}\]"):
        StateDirectory(tmp_path, fs).open()
    assert os.listdir(tmp_path) == []


def test_a_failure_creating_the_layout_releases_the_lock(tmp_path: Path) -> None:
    """When checkpoints/ cannot be created the error says so and the lock is released (a retry can take it)."""
    fs = FaultyFS(LOCAL)
    fs.faults["mkdir"] = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(StateDirectoryError, match=r"cannot create checkpoints/ and spool/: no space left"):
        StateDirectory(tmp_path, fs).open()
    with StateDirectory(tmp_path):
        pass


def decode_safe_name(name: str) -> str:
    return unquote_to_bytes(name).decode("utf-8", "surrogateescape")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_file_safe_names_are_one_file_name_each_and_reversible(name: str) -> None:
    """Any source name maps to a single safe file name (no separator, never `.`/`..`/hidden), and back to itself,
    so two sources never share a checkpoint or spool."""
    safe = file_safe_name(name)
    assert safe and set(safe) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-%")
    assert not safe.startswith(".")
    assert decode_safe_name(safe) == name or (name == "" and safe == "%")


def test_file_safe_name_examples() -> None:
    """Plain names stay readable; separators, a leading dot, % and non-ASCII are escaped."""
    assert file_safe_name("jetstream-1.main_x") == "jetstream-1.main_x"
    assert file_safe_name("a/b") == "a%2Fb"
    assert file_safe_name("..") == "%2E."
    assert file_safe_name("50%") == "50%25"
    assert file_safe_name("é") == "%C3%A9"
