"""File layers for durability tests: a power loss (`PowerLossFS`), a crash at a chosen step (`CrashingFS`) and
injected I/O errors (`FaultyFS`). Each is a `daemon.durable.FileSystem`, so it goes where `LOCAL` would.

`PowerLossFS` works on real files under a root directory and remembers, beside them, what a power loss would
leave: per file the content at its last fsync, per directory the entries as of its last `fsync_dir`. It is
deliberately pessimistic - whatever POSIX does not promise is lost: unsynced appends are dropped (or, with
`torn=True`, cut at an arbitrary point), a created, renamed or unlinked entry counts only once its directory
was fsynced, a file's data counts only once the file itself was fsynced (a rename of an unsynced file over an
old one, dir-fsynced, leaves an empty file). Whatever exists under the root when the layer is made (or appears
there later behind its back) is taken as durable.

`CrashingFS` numbers every mutating call and raises `SimulatedCrash` at call `crash_at`, before doing it: the
state on disk is what a killed process leaves (the kernel keeps everything written). Iterate `crash_at` over
`1..steps()` of a clean run to crash at every step.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from daemon.durable import LOCAL, AppendFile, FileSystem

# The mutating calls `CrashingFS` counts (and `FaultyFS` can fail), by name.
MUTATING_CALLS = ("open_append", "write", "fsync", "replace", "fsync_dir", "unlink", "truncate", "mkdir")


class SimulatedCrash(BaseException):
    """The process died here. A BaseException, so `except Exception` in the code under test cannot swallow it."""


# ---------------------------------------------------------------------------------------------------- power loss


@dataclass
class _Node:
    """An inode: a file (durable `data`) or a directory (durable `entries`: name -> node id)."""

    is_dir: bool
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] = field(default_factory=dict)
    # Set by a truncate: the durable data is then no longer a prefix of the file, so the next fsync reads it all.
    rewritten: bool = False
    # The shortest size an unsynced truncate cut the file to (a power loss with keep_truncates applies it).
    truncated_to: int | None = None


class _PowerLossAppendFile:
    """A handle on one inode: `fsync` makes the whole file's current content its durable content."""

    def __init__(self, fs: PowerLossFS, path: Path, node: int) -> None:
        self._fs, self._node, self._generation = fs, node, fs.generation
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _check(self) -> None:
        if self._generation != self._fs.generation:
            raise OSError(errno.EIO, "handle opened before the power loss")
        if self._fd < 0:
            raise ValueError("write to a closed file")

    def write(self, data: bytes) -> None:
        with self._fs.lock:
            self._check()
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self._size += written

    def fsync(self) -> None:
        with self._fs.lock:
            self._check()
            os.fsync(self._fd)
            self._fs.fsyncs += 1
            node, size = self._fs.nodes[self._node], os.fstat(self._fd).st_size
            node.truncated_to = None
            if node.rewritten or size < len(node.data):
                node.data, node.rewritten = bytearray(os.pread(self._fd, size, 0)), False
            else:  # appends only since the last fsync: read just the new tail (segments grow large)
                node.data += os.pread(self._fd, size - len(node.data), len(node.data))

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    @property
    def size(self) -> int:
        return self._size


class PowerLossFS:
    """Real files under `root`, plus what would survive a power loss; `power_loss()` turns the files into that."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.lock = threading.RLock()
        self.generation = 0
        self.fsyncs = 0  # file fsyncs, for tests that count them
        self.dir_fsyncs = 0
        self.nodes: dict[int, _Node] = {}
        self._paths: dict[Path, int] = {}  # the current name of every known inode
        self._next_id = 0
        self._adopt_all()

    # -- the model

    def _new(self, path: Path, node: _Node) -> int:
        self._next_id += 1
        self.nodes[self._next_id] = node
        self._paths[path] = self._next_id
        return self._next_id

    def _adopt_all(self) -> None:
        """Take everything under the root as it is now as durable (a fresh start, or after a power loss)."""
        self.nodes.clear()
        self._paths.clear()
        self._adopt(self.root)

    def _adopt(self, path: Path) -> int:
        """Register `path` (already on disk, unknown to the model) and what is under it as durable."""
        if path.is_dir():
            node_id = self._new(path, _Node(is_dir=True))
            entries = {name: self._adopt(path / name) for name in sorted(os.listdir(path))}
            self.nodes[node_id].entries = entries
            return node_id
        return self._new(path, _Node(is_dir=False, data=bytearray(path.read_bytes())))

    def _abs(self, path: Path) -> Path:
        full = Path(os.path.abspath(path))
        if full != self.root and self.root not in full.parents:
            raise ValueError(f"{path} is outside the PowerLossFS root {self.root}")
        return full

    def _node_of(self, path: Path) -> int:
        """The inode now at `path`; something created there behind the layer's back is adopted as durable."""
        if path not in self._paths:
            parent = self._node_of(path.parent)
            node_id = self._adopt(path)
            self.nodes[parent].entries.setdefault(path.name, node_id)
        return self._paths[path]

    # -- FileSystem

    def open_append(self, path: Path) -> AppendFile:
        with self.lock:
            path = self._abs(path)
            if path.exists():
                node = self._node_of(path)
            else:
                self._node_of(path.parent)
                # A new inode: its entry is not durable until fsync_dir of the parent, its data until fsync.
                node = self._new(path, _Node(is_dir=False))
            return _PowerLossAppendFile(self, path, node)

    def open_read(self, path: Path) -> BinaryIO:
        return LOCAL.open_read(path)

    def read_bytes(self, path: Path) -> bytes:
        return LOCAL.read_bytes(path)

    def replace(self, source: Path, target: Path) -> None:
        with self.lock:
            source, target = self._abs(source), self._abs(target)
            self._node_of(source)
            self._node_of(target.parent)  # adopt before the rename, or the moved file would be adopted as durable
            if target.exists():
                self._node_of(target)
            os.replace(source, target)
            moved = {path: node for path, node in self._paths.items() if path == source or source in path.parents}
            for path in moved:
                del self._paths[path]
            for path in [p for p in self._paths if p == target or target in p.parents]:
                del self._paths[path]  # the replaced inode lives on only in durable entries that name it
            for path, node in moved.items():
                self._paths[target / path.relative_to(source)] = node

    def fsync_dir(self, path: Path) -> None:
        with self.lock:
            path = self._abs(path)
            LOCAL.fsync_dir(path)
            self.dir_fsyncs += 1
            node = self._node_of(path)
            self.nodes[node].entries = {name: self._node_of(path / name) for name in sorted(os.listdir(path))}

    def unlink(self, path: Path) -> None:
        with self.lock:
            path = self._abs(path)
            self._node_of(path)
            os.unlink(path)
            del self._paths[path]

    def listdir(self, path: Path) -> list[str]:
        return LOCAL.listdir(path)

    def mkdir(self, path: Path) -> None:
        with self.lock:
            path = self._abs(path)
            missing = [p for p in [path, *path.parents] if not p.exists()]
            for directory in reversed(missing):
                self._node_of(directory.parent)
                os.mkdir(directory, 0o700)
                self._new(directory, _Node(is_dir=True))
            if not path.is_dir():
                raise FileExistsError(errno.EEXIST, "not a directory", str(path))

    def exists(self, path: Path) -> bool:
        return LOCAL.exists(path)

    def size(self, path: Path) -> int:
        return LOCAL.size(path)

    def truncate(self, path: Path, size: int) -> None:
        with self.lock:
            path = self._abs(path)
            node = self._node_of(path)
            os.truncate(path, size)  # durable only at the next fsync of the file
            self.nodes[node].rewritten = True
            previous = self.nodes[node].truncated_to
            self.nodes[node].truncated_to = size if previous is None else min(previous, size)

    # -- the power loss

    def power_loss(self, torn: bool = False, keep_truncates: bool = False) -> None:
        """Rewrite the files under the root to what survives a power loss now, and forget open handles.

        torn: a file whose durable content is a prefix of what it holds now keeps half of the unsynced tail
        (the disk wrote some of it back before the power went): recovery must cope with a cut record.
        keep_truncates: an unsynced truncate reached the disk (its metadata was journaled) but no data written
        after it did - the other outcome POSIX allows; by default an unsynced truncate is undone.
        """
        with self.lock:
            current = {node: path for path, node in self._paths.items()}
            survivors: dict[Path, bytes | None] = {}  # relative path -> file content, None for a directory
            self._collect(self.nodes[self._paths[self.root]], Path(), current, (torn, keep_truncates), survivors)
            for name in os.listdir(self.root):
                victim = self.root / name
                if victim.is_dir() and not victim.is_symlink():
                    shutil.rmtree(victim)
                else:
                    victim.unlink()
            for relative, data in sorted(survivors.items()):
                target = self.root / relative
                if data is None:
                    target.mkdir(mode=0o700)
                else:
                    target.write_bytes(data)
                    target.chmod(0o600)
            self.generation += 1
            self._adopt_all()

    def _collect(
        self,
        directory: _Node,
        relative: Path,
        current: dict[int, Path],
        modes: tuple[bool, bool],
        out: dict[Path, bytes | None],
    ) -> None:
        torn, keep_truncates = modes
        for name, node_id in directory.entries.items():
            node = self.nodes[node_id]
            if node.is_dir:
                out[relative / name] = None
                self._collect(node, relative / name, current, modes, out)
                continue
            data = bytes(node.data)
            where = current.get(node_id)
            if keep_truncates and node.truncated_to is not None:
                data = data[: node.truncated_to]
            elif torn and not node.rewritten and where is not None and where.is_file():
                now = where.read_bytes()
                if len(now) > len(data) and now.startswith(data):
                    data = now[: len(data) + (len(now) - len(data)) // 2]
            out[relative / name] = data


# ---------------------------------------------------------------------------------------------------- interposers


class _InterposedAppendFile:
    def __init__(self, fs: _Interposed, inner: AppendFile) -> None:
        self._fs, self._inner = fs, inner

    def write(self, data: bytes) -> None:
        self._fs._before_write(self._inner, data)
        self._inner.write(data)

    def fsync(self) -> None:
        self._fs._before("fsync")
        self._inner.fsync()

    def close(self) -> None:
        self._inner.close()  # not a mutating call: closing loses nothing the kernel holds

    @property
    def size(self) -> int:
        return self._inner.size


class _Interposed:
    """A FileSystem over `inner` that calls `_before(name)` ahead of each mutating call (see MUTATING_CALLS)."""

    def __init__(self, inner: FileSystem) -> None:
        self.inner = inner

    def _before(self, name: str) -> None:
        raise NotImplementedError

    def _before_write(self, handle: AppendFile, data: bytes) -> None:
        self._before("write")

    def open_append(self, path: Path) -> AppendFile:
        self._before("open_append")
        return _InterposedAppendFile(self, self.inner.open_append(path))

    def open_read(self, path: Path) -> BinaryIO:
        return self.inner.open_read(path)

    def read_bytes(self, path: Path) -> bytes:
        return self.inner.read_bytes(path)

    def replace(self, source: Path, target: Path) -> None:
        self._before("replace")
        self.inner.replace(source, target)

    def fsync_dir(self, path: Path) -> None:
        self._before("fsync_dir")
        self.inner.fsync_dir(path)

    def unlink(self, path: Path) -> None:
        self._before("unlink")
        self.inner.unlink(path)

    def listdir(self, path: Path) -> list[str]:
        return self.inner.listdir(path)

    def mkdir(self, path: Path) -> None:
        self._before("mkdir")
        self.inner.mkdir(path)

    def exists(self, path: Path) -> bool:
        return self.inner.exists(path)

    def size(self, path: Path) -> int:
        return self.inner.size(path)

    def truncate(self, path: Path, size: int) -> None:
        self._before("truncate")
        self.inner.truncate(path, size)


class CrashingFS(_Interposed):
    """`inner`, but the process dies (`SimulatedCrash`) at mutating call number `crash_at` (1-based), before it.

    `crash_at=None` never crashes: run once like that and `steps()` tells how many calls there are to crash at.
    After the crash every mutating call raises again (a dead process does nothing more).
    writes_torn: when the crashing call is a write, half of its bytes are written first.
    """

    def __init__(self, inner: FileSystem, crash_at: int | None, writes_torn: bool = False) -> None:
        super().__init__(inner)
        self.crash_at, self.writes_torn = crash_at, writes_torn
        self.calls: list[str] = []  # the mutating calls made, in order (the crashing one last)
        self.crashed = False
        self._lock = threading.Lock()

    def steps(self) -> int:
        return len(self.calls)

    def _step(self, name: str) -> bool:
        """Count a mutating call; True when it is the one to crash at (the caller then calls `_crash`)."""
        with self._lock:
            if self.crashed:
                raise SimulatedCrash(f"{name} after the crash")
            self.calls.append(name)
            return self.crash_at is not None and len(self.calls) >= self.crash_at

    def _crash(self) -> None:
        with self._lock:
            self.crashed = True
            raise SimulatedCrash(f"crash at step {len(self.calls)} ({self.calls[-1]})")

    def _before(self, name: str) -> None:
        if self._step(name):
            self._crash()

    def _before_write(self, handle: AppendFile, data: bytes) -> None:
        if self._step("write"):
            if self.writes_torn:
                handle.write(data[: len(data) // 2])
            self._crash()


class FaultyFS(_Interposed):
    """`inner`, but a mutating call named in `faults` raises that OSError instead (until the entry is removed).

    e.g. `fs.faults["fsync"] = OSError(errno.EIO, "Input/output error")`; `failed` counts the refused calls.
    """

    def __init__(self, inner: FileSystem) -> None:
        super().__init__(inner)
        self.faults: dict[str, OSError] = {}
        self.failed: dict[str, int] = {}
        self._lock = threading.Lock()

    def _before(self, name: str) -> None:
        with self._lock:
            error = self.faults.get(name)
            if error is not None:
                self.failed[name] = self.failed.get(name, 0) + 1
                raise OSError(error.errno, error.strerror)
