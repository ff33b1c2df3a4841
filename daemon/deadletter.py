"""The dead-letter file: one JSON line per record that could not be delivered, with its reason.

It is the daemon's last resort, so its own failure is fatal: a write that fails (ENOSPC, EIO) raises
`DeadLetterWriteFailed` and every later write is refused at once (`DeadLetterUnavailable`), so the caller
can count the record as lost, log its origin and stop the daemon. After `close`, writes are refused the
same way (`DeadLetterClosed`): a source abandoned at shutdown cannot write into a closed handle. Lines are
written through a `FileSystem` (daemon/durable.py) with the state's fsync policy; the file is created 0600
(records may hold personal data).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.durable import LOCAL, FileSystem

FSYNC_POLICIES = ("batch", "interval")


class DeadLetterUnavailable(Exception):
    """The dead-letter file cannot take this record; `__cause__` (if any) says why."""


class DeadLetterWriteFailed(DeadLetterUnavailable):
    """Writing or flushing the file failed; the file refuses every later write."""


class DeadLetterClosed(DeadLetterUnavailable):
    """The file was closed at shutdown."""


class DeadLetterFile:
    """Appends dead letters to a JSON-lines file, durably: a dead-lettered record counts as done.

    fsync="batch": `write` and `write_many` return once their lines were fsynced; writers at the same time
    share one fsync (group commit). `durable=False` returns once the lines are in the kernel (a process crash
    keeps them) and runs `after_sync` once an fsync covered them - `sync()`, a later durable write, or the
    interval thread - so a source that rejects many inputs never waits for the disk per input.
    fsync="interval": a thread fsyncs every `fsync_interval_s`; writes never wait (a power loss can take the
    lines of the last interval).
    """

    def __init__(
        self,
        path: Path,
        sink: str,
        fsync: str = "batch",
        fsync_interval_s: float = 1.0,
        fs: FileSystem = LOCAL,
        on_fsync: Callable[[], None] | None = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self.path = path
        self.sink = sink
        self._batch = fsync == "batch"
        self._fs = fs
        self._on_fsync = on_fsync
        self._lock = threading.Lock()  # appends
        self._sync_lock = threading.Lock()  # one fsync at a time
        self._failure: OSError | None = None
        self._closed = False
        self._written = 0  # bytes appended through this handle
        self._synced = 0  # of those, bytes an fsync covered
        self._after_sync: list[tuple[int, Callable[[], None]]] = []  # (bytes written when registered, callback)
        if not fs.exists(path.parent):
            fs.mkdir(path.parent)
            fs.fsync_dir(path.parent.parent)  # else the directory, the file and its lines vanish at a power loss
        created = not fs.exists(path)
        self._handle = fs.open_append(path)
        if created:
            fs.fsync_dir(path.parent)  # the new file's entry must survive a power loss too
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        if not self._batch:
            self._syncer = threading.Thread(
                target=self._sync_every, args=(fsync_interval_s,), name="dead-letter-sync", daemon=True
            )
            self._syncer.start()

    @property
    def failure(self) -> OSError | None:
        """The error that broke the file, once a write failed."""
        return self._failure

    def write(
        self, *, data: bytes, source: str, origin: str, reason: str, detail: str, durable: bool = True,
        after_sync: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        """Append one line; raises `DeadLetterUnavailable` when the record could not be kept."""
        self.write_many([(data, source, origin, reason, detail)], durable, after_sync)

    def write_many(
        self,
        items: Sequence[tuple[bytes, str, str, str, str]],
        durable: bool = True,
        after_sync: Callable[[], None] | None = None,
    ) -> None:
        """Append one line per (data, source, origin, reason, detail) in one write; all or none are kept."""
        payload = "".join(self._line(*item) for item in items).encode("utf-8")
        with self._lock:
            if self._closed:
                raise DeadLetterClosed(f"{self.path} is closed (shutdown)")
            if self._failure is not None:
                raise DeadLetterWriteFailed(f"{self.path} failed earlier: {self._failure}") from self._failure
            try:
                self._handle.write(payload)
            except OSError as exc:
                self._failure = exc
                raise DeadLetterWriteFailed(f"cannot write {self.path}: {exc}") from exc
            self._written += len(payload)
            mark = self._written
            if after_sync is not None:
                self._after_sync.append((mark, after_sync))
        if durable and self._batch:
            self._sync_to(mark)

    def sync(self) -> None:
        """fsync what was written so far (and run the callbacks it covers); raises DeadLetterWriteFailed."""
        with self._lock:
            mark = self._written
        self._sync_to(mark)

    def _sync_to(self, mark: int) -> None:
        with self._sync_lock:
            if self._synced >= mark and not self._due():
                return
            with self._lock:
                upto = self._written  # everything appended before this fsync starts is covered by it
                if self._failure is not None:
                    raise DeadLetterWriteFailed(f"{self.path} failed earlier: {self._failure}") from self._failure
            if upto > self._synced:
                try:
                    self._handle.fsync()
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # EINVAL: a file that cannot be synced (a pipe, a device)
                        with self._lock:
                            self._failure = exc
                        raise DeadLetterWriteFailed(f"cannot fsync {self.path}: {exc}") from exc
                if self._on_fsync is not None:
                    self._on_fsync()
                self._synced = upto
            with self._lock:
                ready = [cb for at, cb in self._after_sync if at <= upto]
                self._after_sync = [(at, cb) for at, cb in self._after_sync if at > upto]
        for callback in ready:
            callback()

    def _due(self) -> bool:
        with self._lock:
            return any(at <= self._written for at, _ in self._after_sync)

    def _sync_every(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.sync()
            except DeadLetterWriteFailed:
                return  # the next write reports it; nothing more to sync

    def _line(self, data: bytes, source: str, origin: str, reason: str, detail: str) -> str:
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "source": _text(source),
            "origin": _text(origin),
            "sink": self.sink,
            "reason": _text(reason),
            "detail": _text(detail),
        }
        try:
            entry["data"] = data.decode("utf-8")
        except UnicodeDecodeError:
            # Undecodable bytes are kept exactly, so the record can be inspected or repaired and replayed.
            entry["data_base64"] = base64.b64encode(data).decode("ascii")
        return json.dumps(entry, ensure_ascii=False) + "\n"

    def close(self) -> None:
        """Stop the interval thread, fsync what is left (running the callbacks it covers), close the file."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(DeadLetterWriteFailed):  # raised to the writer it hit, and reported then
            self.sync()
        try:
            self._handle.close()
        except OSError as exc:
            self._failure = self._failure or exc


def _text(value: str) -> str:
    """`value` with any lone surrogate spelled out as `\\udcXX` text, so the line encodes as UTF-8.

    Origins name files, and a file name need not be UTF-8 (Python hands it over with surrogate escapes);
    exception messages in details can quote such text too. A write must not fail over how a name is spelled.
    """
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
