"""The spool's segment files: recovery, appending and rolling, deleting, and the syncer's fsync rounds.

`SegmentFiles` shares the spool's lock: methods marked "under the lock" expect the caller to hold it;
`recover`, `sync_round` and `sync_loop` take it themselves. Only the syncer thread (or `close_all`, once it
stopped) closes a segment's append handle, so an fsync in progress outside the lock never meets a closed file.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from daemon.durable import AppendFile, FileSystem
from daemon.spool_segments import (
    COMMIT_NAME,
    HEADER_BYTES,
    SpoolFormatError,
    decode_commit,
    encode_header,
    parse_segment_name,
    scan_segment,
    segment_name,
)

if TYPE_CHECKING:
    from daemon.spool_types import SpoolEvents

# A failed fsync round is retried after this long (not in a tight loop).
SYNC_RETRY_S = 1.0
# fsync=batch: the shortest time from one fsync round's start to the next. Bounds fsyncs to 100/s; a power loss
# can take the appends of one gap plus one fsync (about 15 ms here).
BATCH_FSYNC_GAP_S = 0.01
UNUSABLE_SUFFIX = ".unusable"


@dataclass(slots=True, eq=False)
class SpoolSegment:
    id: int
    path: Path
    end: int = HEADER_BYTES  # end of the last good frame; nothing past it is ever read
    resume_at: int = HEADER_BYTES  # recovered segments: where the first uncommitted record starts
    records: int = 0  # records not committed when recovered, plus those appended since
    frame_bytes: int = 0
    read: int = 0  # of `records`, how many the reader took
    read_bytes: int = 0
    first_origin: str | None = None
    last_origin: str | None = None
    first_appended_at: float | None = None
    handle: AppendFile | None = field(default=None, repr=False)
    sealed: bool = True  # no more appends (every segment but the active one)
    deleted: bool = False
    unsynced: bool = False  # written to since its last fsync
    syncing: bool = False  # in the syncer's current round (its handle must not be closed by anyone else)

    @property
    def start(self) -> int:
        return self.resume_at


class SegmentFiles:
    def __init__(
        self, directory: Path, fs: FileSystem, events: SpoolEvents, lock: threading.Lock, segment_bytes: int, batch: bool
    ) -> None:
        self._batch = batch
        self._directory = directory
        self._fs = fs
        self._events = events
        self._lock = lock
        self._sync_cv = threading.Condition(lock)
        self._synced_cv = threading.Condition(lock)
        self._sync_lock = threading.Lock()  # one fsync round at a time
        self.segment_bytes = segment_bytes
        self.segments: dict[int, SpoolSegment] = {}  # by id, increasing (insertion order)
        self.active: SpoolSegment | None = None
        self.disk_bytes = 0
        self._next_id = 1
        self._open: list[SpoolSegment] = []  # segments with an append handle (the active one and retired ones)
        self._written = 0  # appends so far (a sequence number)
        self.synced = 0  # appends known durable
        self._dir_dirty = False
        self._pending_writes = False
        self._stop = False
        self._syncer_waiting = False

    # -- recovery ---------------------------------------------------------------------------------------------

    def recover(self) -> tuple[int, int]:
        """Scan the directory (cut torn tails, delete what the commit covers); returns the commit position."""
        fs, directory = self._fs, self._directory
        missing = [d for d in (directory, *directory.parents) if not fs.exists(d)]
        if missing:
            fs.mkdir(directory)
            for created in reversed(missing):  # a new directory entry survives a power loss once its parent is fsynced
                fs.fsync_dir(created.parent)
        commit = (0, 0)
        commit_path = directory / COMMIT_NAME
        if fs.exists(commit_path):
            try:
                commit = decode_commit(fs.read_bytes(commit_path))
            except SpoolFormatError as exc:
                self._events.spool_corrupt(str(commit_path), 0, f"{exc}; every segment is replayed")
        ids = sorted(i for i in (parse_segment_name(name) for name in fs.listdir(directory)) if i is not None)
        changed = False
        for segment_id in ids:
            path = directory / segment_name(segment_id)
            if segment_id < commit[0]:
                fs.unlink(path)
                changed = True
                continue
            segment = self._recover_segment(path, segment_id, commit[1] if segment_id == commit[0] else 0)
            if segment is None or segment.records == 0:
                if segment is not None:
                    fs.unlink(path)
                changed = True
                continue
            self.segments[segment_id] = segment
            self.disk_bytes += segment.end
        self._next_id = max([*ids, commit[0]]) + 1
        if changed:
            fs.fsync_dir(directory)
        return commit

    def _recover_segment(self, path: Path, segment_id: int, skip_to: int) -> SpoolSegment | None:
        fs = self._fs
        try:
            scanned = scan_segment(fs, path, segment_id, skip_to)
        except SpoolFormatError as exc:
            size = fs.size(path)
            if size < HEADER_BYTES:  # created, header never fully written: holds no record
                if size:
                    self._events.spool_corrupt(str(path), 0, f"{exc}; empty segment removed")
                fs.unlink(path)
            else:  # not ours, or its header was damaged: keep the bytes for a person to look at
                aside = path.with_name(path.name + UNUSABLE_SUFFIX)
                self._events.spool_corrupt(str(path), 0, f"{exc}; moved to {aside.name}")
                fs.replace(path, aside)
            return None
        if scanned.error is not None:
            cut = scanned.file_size - scanned.end
            self._events.spool_corrupt(str(path), scanned.end, f"{scanned.error}; {cut} bytes cut")
            fs.truncate(path, scanned.end)
            handle = fs.open_append(path)  # the cut is durable once fsynced through a handle
            try:
                handle.fsync()
            finally:
                handle.close()
        return SpoolSegment(
            segment_id,
            path,
            end=scanned.end,
            resume_at=scanned.resume_at,
            records=scanned.records,
            frame_bytes=scanned.frame_bytes,
            first_origin=scanned.first_origin,
            last_origin=scanned.last_origin,
            first_appended_at=scanned.first_appended_at,
        )

    # -- appending (under the lock) ---------------------------------------------------------------------------

    def _needs_roll(self, frame_bytes: int) -> bool:
        active = self.active
        return active is None or (active.end > HEADER_BYTES and active.end + frame_bytes > self.segment_bytes)

    def fits(self, frame_bytes: int, max_bytes: int) -> bool:
        """Room for one more frame? An empty spool takes any record, so a huge one cannot block forever."""
        needed = frame_bytes + (HEADER_BYTES if self._needs_roll(frame_bytes) else 0)
        return self.disk_bytes == 0 or self.disk_bytes + needed <= max_bytes

    def write(self, frame: bytes, appended_at: float, origin: str) -> tuple[SpoolSegment, int]:
        """Append one frame (rolling to a new segment when due); returns its segment and start offset.

        On OSError the segment is abandoned - a torn frame may now end it, so nothing is appended after it -
        and the error is raised for the caller to report.
        """
        if self._needs_roll(len(frame)):
            self._roll()
        segment = self.active
        assert segment is not None and segment.handle is not None
        start = segment.end
        try:
            segment.handle.write(frame)
        except OSError:
            self._abandon(segment)
            raise
        segment.end = start + len(frame)
        segment.records += 1
        segment.frame_bytes += len(frame)
        if segment.first_origin is None:
            segment.first_origin = origin
            segment.first_appended_at = appended_at
        segment.last_origin = origin
        segment.unsynced = True
        self.disk_bytes += len(frame)
        self._written += 1
        if self._batch:
            self._pending_writes = True
            if self._syncer_waiting:
                self._syncer_waiting = False
                self._sync_cv.notify()
        return segment, start

    def _roll(self) -> None:
        if self.active is not None:
            self.seal(self.active)
        segment_id = self._next_id
        self._next_id += 1  # never reused, even when creating it fails
        path = self._directory / segment_name(segment_id)
        handle = self._fs.open_append(path)
        try:
            handle.write(encode_header(segment_id))
        except OSError:
            with contextlib.suppress(OSError):
                handle.close()
            self._unlink_quietly(path)
            raise
        segment = SpoolSegment(segment_id, path, handle=handle, sealed=False, unsynced=True)
        self._open.append(segment)
        self.segments[segment_id] = segment
        self.disk_bytes += HEADER_BYTES
        self.active = segment
        self._dir_dirty = True  # the new entry survives a power loss only once the directory is fsynced

    def _abandon(self, segment: SpoolSegment) -> None:
        with contextlib.suppress(OSError):  # best effort: recovery cuts a torn tail anyway (and reports it)
            self._fs.truncate(segment.path, segment.end)
        self.seal(segment)

    def _unlink_quietly(self, path: Path) -> None:
        with contextlib.suppress(OSError):
            self._fs.unlink(path)

    def seal(self, segment: SpoolSegment) -> None:
        """No more appends to `segment`; the syncer's next round fsyncs and closes it."""
        segment.sealed = True
        if segment is self.active:
            self.active = None

    # -- deleting (under the lock) ----------------------------------------------------------------------------

    def delete(self, segment: SpoolSegment) -> bool:
        """Remove a segment's file; False (reported) when that fails."""
        try:
            self._fs.unlink(segment.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._events.spool_write_failed(exc)
            return False
        self.seal(segment)
        segment.deleted = True
        if not segment.syncing:  # closed at once so its space is freed; else the syncer closes it
            self._close(segment)
        del self.segments[segment.id]
        self.disk_bytes -= segment.end
        self._dir_dirty = True
        return True

    def delete_behind(self, position: tuple[int, int]) -> bool:
        """Delete every segment whose records all end at or before `position`; True when any went."""
        doomed = [s for s in self.segments.values() if s.id < position[0] or (s.id == position[0] and s.end <= position[1])]
        return sum(self.delete(segment) for segment in doomed) > 0

    def oldest_after(self, segment_id: int) -> SpoolSegment | None:
        """The oldest segment after `segment_id` that holds records (all unread: the reader is not past it)."""
        return next((s for s in self.segments.values() if s.id > segment_id and s.records > 0), None)

    def droppable_bytes(self, segment_id: int) -> int:
        """Bytes of the segments after `segment_id` that hold records (what drop_oldest could free)."""
        return sum(s.end for s in self.segments.values() if s.id > segment_id and s.records > 0)

    def next_after(self, segment_id: int) -> SpoolSegment | None:
        return next((s for s in self.segments.values() if s.id > segment_id), None)

    # -- syncing ----------------------------------------------------------------------------------------------

    def sync_round(self) -> bool:
        """fsync every segment written to since its last fsync, then the directory when entries changed;
        close sealed segments. True when everything appended before the round is durable."""
        with self._sync_lock:
            with self._lock:
                sequence = self._written
                work = [(segment, segment.unsynced and not segment.deleted) for segment in self._open]
                for segment, _ in work:
                    segment.unsynced = False
                    segment.syncing = True
                dir_dirty, self._dir_dirty = self._dir_dirty, False
                self._pending_writes = False
            ok = False
            try:
                ok = self._fsync_all(work, dir_dirty)
            except Exception as exc:  # noqa: BLE001 - a bug under us must not stop fsyncs for good, nor hide
                self._events.spool_write_failed(OSError(errno.EIO, f"fsync round failed: {exc!r}"))
            finally:
                with self._lock:
                    for segment, needed in work:
                        segment.syncing = False
                        if not ok and needed:
                            segment.unsynced = True  # not known durable: the next round tries again
                        if segment is not self.active and (segment.deleted or not segment.unsynced):
                            self._close(segment)
                    if ok:
                        self.synced = max(self.synced, sequence)
                        self._synced_cv.notify_all()
                    elif dir_dirty:
                        self._dir_dirty = True
            return ok

    def _fsync_all(self, work: list[tuple[SpoolSegment, bool]], dir_dirty: bool) -> bool:
        ok = True
        for segment, needed in work:
            if needed and segment.handle is not None:
                ok = self._fsync(segment) and ok
        if dir_dirty:
            try:
                self._fs.fsync_dir(self._directory)
            except OSError as exc:
                ok = False
                self._events.spool_write_failed(exc)
        return ok

    def wait_synced(self, timeout_s: float) -> bool:
        """Wait (without fsyncing) until a round made every append so far durable; False on timeout."""
        with self._lock:
            target = self._written
            return self._synced_cv.wait_for(lambda: self.synced >= target or self._stop, timeout_s) and self.synced >= target

    def _fsync(self, segment: SpoolSegment) -> bool:
        assert segment.handle is not None
        started = time.perf_counter()
        try:
            segment.handle.fsync()
        except OSError as exc:
            self._events.spool_write_failed(exc)
            return False
        self._events.spool_fsync(time.perf_counter() - started)
        return True

    def _close(self, segment: SpoolSegment) -> None:
        handle, segment.handle = segment.handle, None
        if segment in self._open:
            self._open.remove(segment)
        if handle is not None:
            with contextlib.suppress(OSError):
                handle.close()

    def sync_loop(self, batch: bool, interval_s: float) -> None:
        """The syncer thread: batch fsyncs as soon as appends wait; interval every `interval_s`."""
        due = time.monotonic() + interval_s
        while True:
            with self._lock:
                while not self._stop and not (batch and self._pending_writes):
                    remaining = None
                    if not batch:
                        remaining = due - time.monotonic()
                        if remaining <= 0:
                            break
                    self._syncer_waiting = True
                    try:
                        self._sync_cv.wait(remaining)
                    finally:
                        self._syncer_waiting = False
                if self._stop:
                    return
            started = time.monotonic()
            if started >= due:
                due = started + interval_s
            if not self.sync_round():
                with self._lock:
                    self._sync_cv.wait_for(lambda: self._stop, SYNC_RETRY_S)
                    self._pending_writes = True  # what failed is still unsynced: batch tries again now
            elif batch:
                # Rounds at most every BATCH_FSYNC_GAP_S: fsync's kernel work is paid per call, so a fast source
                # would otherwise spend a core on back-to-back fsyncs of a few records each.
                gap = BATCH_FSYNC_GAP_S - (time.monotonic() - started)
                if gap > 0:
                    with self._lock:
                        self._sync_cv.wait_for(lambda: self._stop, gap)

    def stop_syncer(self) -> None:
        with self._lock:
            self._stop = True
            self._sync_cv.notify_all()

    def close_all(self) -> None:
        """Under the lock, with the syncer stopped: close every handle."""
        self.active = None
        for segment in list(self._open):
            self._close(segment)
