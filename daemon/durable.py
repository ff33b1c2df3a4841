"""The file layer under the daemon's durable state (checkpoints, the spool, the dead-letter file).

Every write that must survive a crash or a power loss goes through a `FileSystem`, so tests can put a layer
under it that forgets what was not fsynced (a power loss) or stops after a given step (a crash) - see
tests/fake_fs.py. `LocalFileSystem` is the real one. What is durable when:

- bytes written to an `AppendFile` survive a process crash at once (they are in the kernel), and a power loss
  only once `fsync` returned;
- a new or renamed directory entry survives a power loss only once its directory was fsynced (`fsync_dir`);
- `atomic_write` replaces a file so that after a crash or power loss it holds either the old or the new bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Protocol

# Suffix of the temporary file `atomic_write` renames over its target; readers ignore such files.
TMP_SUFFIX = ".tmp"


class AppendFile(Protocol):
    """A file opened for appending: `write` appends, `fsync` makes what was written durable."""

    def write(self, data: bytes) -> None: ...

    def fsync(self) -> None: ...

    def close(self) -> None: ...

    @property
    def size(self) -> int:
        """Bytes in the file now, those written through this handle included."""
        ...


class FileSystem(Protocol):
    def open_append(self, path: Path) -> AppendFile:
        """Open `path` for appending, creating it (empty) when missing; the new entry needs `fsync_dir`."""
        ...

    def open_read(self, path: Path) -> BinaryIO:
        """Open `path` for reading (what was written so far, durable or not)."""
        ...

    def read_bytes(self, path: Path) -> bytes: ...

    def replace(self, source: Path, target: Path) -> None:
        """Rename `source` over `target` (atomic on POSIX); durable once the directory was fsynced."""
        ...

    def fsync_dir(self, path: Path) -> None: ...

    def unlink(self, path: Path) -> None: ...

    def listdir(self, path: Path) -> list[str]: ...

    def mkdir(self, path: Path) -> None:
        """Create `path` and its missing parents; nothing when it exists."""
        ...

    def exists(self, path: Path) -> bool: ...

    def size(self, path: Path) -> int: ...

    def truncate(self, path: Path, size: int) -> None:
        """Cut `path` to `size` bytes (a torn last record); durable once fsynced through a new handle."""
        ...


class ForwardingAppendFile:
    """An AppendFile passing every call on to another: a layer overrides what it adds (counting, a slow or
    failing disk) and leaves the rest as it is."""

    def __init__(self, inner: AppendFile) -> None:
        self._inner = inner

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def fsync(self) -> None:
        self._inner.fsync()

    def close(self) -> None:
        self._inner.close()

    @property
    def size(self) -> int:
        return self._inner.size


class _LocalAppendFile:
    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # os.write may write less than asked (a signal, a nearly full disk)
            written = os.write(self._fd, view)
            view = view[written:]
            self._size += written

    def fsync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    @property
    def size(self) -> int:
        return self._size


class LocalFileSystem:
    """The operating system's files. State files are created with mode 0600: records may hold personal data."""

    def open_append(self, path: Path) -> AppendFile:
        return _LocalAppendFile(path)

    def open_read(self, path: Path) -> BinaryIO:
        return path.open("rb")

    def read_bytes(self, path: Path) -> bytes:
        return path.read_bytes()

    def replace(self, source: Path, target: Path) -> None:
        os.replace(source, target)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path) -> None:
        path.unlink()

    def listdir(self, path: Path) -> list[str]:
        return sorted(os.listdir(path))

    def mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def exists(self, path: Path) -> bool:
        return path.exists()

    def size(self, path: Path) -> int:
        return path.stat().st_size

    def truncate(self, path: Path, size: int) -> None:
        os.truncate(path, size)


LOCAL = LocalFileSystem()


def atomic_write(fs: FileSystem, path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash or power loss at any step leaves the old or the new content.

    Write a temporary file beside it, fsync it, rename it over `path`, fsync the directory (the rename is
    durable only then). A leftover temporary file from an interrupted earlier write is replaced first.
    """
    tmp = path.with_name(path.name + TMP_SUFFIX)
    if fs.exists(tmp):
        fs.unlink(tmp)
    handle = fs.open_append(tmp)
    try:
        handle.write(data)
        handle.fsync()
    finally:
        handle.close()
    fs.replace(tmp, path)
    fs.fsync_dir(path.parent)
