"""The state directory: where checkpoints, spools and the dead-letter file live (systemd's StateDirectory=).

`open` makes sure, before the daemon takes a single record, that the directory exists (it is created when
missing), is a directory, takes a write + fsync (a read-only mount, missing permissions or a full disk fail
here with a clear message, not later in the middle of a spool append), and is not used by another daemon: an
exclusive `flock` on `<dir>/lock`, held until `close` (the kernel drops it when the process dies, so a crashed
daemon never leaves a stale lock behind). The lock file holds the owner's pid for the error message.

Layout: `checkpoints/<source>.json`, `spool/<source>/...`, `lock`, and by default `dead-letter.jsonl`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from daemon.durable import LOCAL, FileSystem

LOCK_FILE_NAME = "lock"
CHECKPOINTS_DIR_NAME = "checkpoints"
SPOOL_DIR_NAME = "spool"
# The probe file is named after the pid, so two daemons racing to the lock cannot delete each other's probe.
PROBE_PREFIX = ".probe-"
# One page: a disk with less than a block free fails the probe instead of the first real write.
PROBE_BYTES = 4096
# The lock file holds a pid: a few bytes are enough to read it back.
LOCK_READ_BYTES = 64
# Characters kept as they are in file names made from source names; any other byte is written %XX.
SAFE_NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")

_PROBLEMS = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "a parent is not a directory",
    errno.EEXIST: "exists and is not a directory",
}


class StateDirectoryError(Exception):
    """The state directory cannot be used; the message is `<path>/: <problem> (<OS error>)`."""


def file_safe_name(name: str) -> str:
    """`name` as one file name: `[A-Za-z0-9._-]` kept, every other UTF-8 byte as `%XX`.

    A leading dot is escaped too, so no name can be `.`, `..` or a hidden file; the mapping stays one-to-one
    (a `%` is itself escaped), so two sources never share a file.
    """
    out = []
    for index, byte in enumerate(name.encode("utf-8", "surrogateescape")):
        char = chr(byte)
        if char in SAFE_NAME_CHARACTERS and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.append(f"%{byte:02X}")
    return "".join(out) or "%"  # a lone % is never produced otherwise (it is escaped as %25)


def describe(error: OSError) -> str:
    """A short phrase for what went wrong, then the OS's own words: `read-only file system ([Errno 30] ...)`."""
    problem = _PROBLEMS.get(error.errno or 0, "cannot write")
    return f"{problem} ({error})"


class StateDirectory:
    """The daemon's state directory; `open` checks it and locks it, `close` unlocks it."""

    def __init__(self, path: Path, fs: FileSystem = LOCAL) -> None:
        self.path = path
        self._fs = fs
        self._lock_fd = -1

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR_NAME

    def spool(self, source: str) -> Path:
        """The spool directory of `source` (the spool creates it)."""
        return self.path / SPOOL_DIR_NAME / file_safe_name(source)

    def _error(self, problem: str) -> StateDirectoryError:
        return StateDirectoryError(f"{self.path}/: {problem}")

    def open(self) -> None:
        """Create (when missing), check, probe and lock the directory; raises `StateDirectoryError`."""
        if self._lock_fd >= 0:
            return
        self._create()
        self._probe()
        self._lock()
        try:
            for name in (CHECKPOINTS_DIR_NAME, SPOOL_DIR_NAME):
                self._fs.mkdir(self.path / name)
            self._fs.fsync_dir(self.path)
        except OSError as exc:
            self.close()
            raise self._error(f"cannot create {CHECKPOINTS_DIR_NAME}/ and {SPOOL_DIR_NAME}/: {describe(exc)}") from exc
        self._remove_stale_probes()

    def _create(self) -> None:
        if self._fs.exists(self.path):
            if not self.path.is_dir():
                raise self._error("not a directory (a file is in the way)")
            return
        try:
            self._fs.mkdir(self.path)
            # The new entry must outlive a power loss, or the first checkpoint would land in a lost directory.
            self._fs.fsync_dir(self.path.parent)
        except OSError as exc:
            raise self._error(f"cannot create: {describe(exc)}") from exc

    def _probe(self) -> None:
        probe = self.path / f"{PROBE_PREFIX}{os.getpid()}"
        try:
            handle = self._fs.open_append(probe)
            try:
                handle.write(b"\0" * PROBE_BYTES)
                handle.fsync()
            finally:
                handle.close()
            self._fs.unlink(probe)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._fs.unlink(probe)
            raise self._error(describe(exc)) from exc

    def _lock(self) -> None:
        # The lock is not durable state (the kernel holds it), so it goes to the OS directly, not through `fs`.
        path = self.path / LOCK_FILE_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._error(f"cannot open {LOCK_FILE_NAME}: {describe(exc)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, LOCK_READ_BYTES, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"pid {owner}" if owner.isdigit() else "another process"
            raise self._error(f"in use by {who} (another tweet-producer on the same state directory)") from None
        except OSError as exc:
            os.close(fd)
            raise self._error(f"cannot lock {LOCK_FILE_NAME}: {describe(exc)}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as exc:
            os.close(fd)
            raise self._error(f"cannot write {LOCK_FILE_NAME}: {describe(exc)}") from exc
        self._lock_fd = fd

    def _remove_stale_probes(self) -> None:
        """Probe files left by daemons that died mid-probe (we hold the lock: no live daemon is probing)."""
        with contextlib.suppress(OSError):
            for name in self._fs.listdir(self.path):
                if name.startswith(PROBE_PREFIX):
                    self._fs.unlink(self.path / name)

    def close(self) -> None:
        """Release the lock (the file stays: deleting it would race with a daemon about to lock it)."""
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> StateDirectory:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()
