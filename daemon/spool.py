"""The durable spool of a live source: records go to disk before they count as received, and leave it once
the daemon commits them (delivered or dead-lettered).

Threads: one source thread calls `append`, one feeder thread calls `read`, the checkpoint thread calls
`commit` and `stats`; a syncer thread (started by `open`) fsyncs. The format is in daemon/spool_segments.py.

- Durability: `append` returns once the record is written (in the kernel: a process crash keeps it). The
  syncer makes it survive a power loss: fsync=batch fsyncs whenever appends are waiting (one fsync covers
  every append before it; the source never waits for it), fsync=interval every `fsync_interval_s`. A record
  in a new segment is durable only once the directory was fsynced too; the syncer does that in the same round.
- Recovery (`open`): torn or corrupt tails are cut and reported, segments behind the commit deleted; appends
  always go to a new segment, so positions keep increasing even when a power loss took the newest segment.
- Capacity: `max_bytes` over the segment files. Space is freed a whole segment at a time, so a segment is
  at most a quarter of `max_bytes`. when_full=block: `append` waits (reporting the time blocked) until a
  commit frees a segment, or returns False once `stopping` is set. drop_oldest: the oldest segment whose
  records were all unread is dropped (reported: count, first and last origin); records already read (in
  flight to the sink) are never dropped, and when only they fill the spool, append blocks as above.
- Disk errors never raise out of `append`: reported, the segment is abandoned (never appended to after a
  possibly torn frame) and the spool behaves as full, retrying every SPOOL_RETRY_S (drop_oldest still drops
  for ENOSPC/EDQUOT, one segment per retry).
- Memory: the last HOT_TAIL_RECORDS appends (at most HOT_TAIL_BYTES) stay in memory with their parsed event,
  so a feeder that keeps up never reads the disk; older records are read back from the files.
"""

from __future__ import annotations

import errno
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon import spool_reading
from daemon.durable import LOCAL, FileSystem, atomic_write
from daemon.spool_files import SegmentFiles
from daemon.spool_reading import SPOOL_RETRY_S, SpoolReading
from daemon.spool_segments import (
    COMMIT_NAME,
    HEADER_BYTES,
    encode_commit,
    encode_frame,
)
from daemon.spool_types import HotRecord, SpooledRecord, SpoolEvents, SpoolStats
from sources.base import SpoolSettings

__all__ = ["SPOOL_RETRY_S", "Spool", "SpoolEvents", "SpoolStats", "SpooledRecord"]

# A blocked append looks at `stopping` this often.
SPOOL_BLOCK_POLL_S = 0.05
# A long block is reported in pieces this long, so the blocked-seconds metric moves during an outage.
SPOOL_BLOCKED_REPORT_S = 1.0
HOT_TAIL_RECORDS = 1024
HOT_TAIL_BYTES = 8 * 1024 * 1024
# Space is freed by deleting whole segments; with at least this many per spool, a commit frees some.
MIN_SEGMENTS_PER_SPOOL = 4
MIN_SEGMENT_BYTES = 4096
SYNCER_JOIN_S = 10.0
_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FSYNC_POLICIES = ("batch", "interval")


class Spool(SpoolReading):
    def __init__(
        self,
        directory: Path,
        settings: SpoolSettings,
        fsync: str,
        fsync_interval_s: float,
        events: SpoolEvents,
        fs: FileSystem = LOCAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self._directory = directory
        self._max_bytes = settings.max_bytes
        self._drop = settings.when_full == "drop_oldest"
        self._batch = fsync == "batch"
        self._interval = fsync_interval_s
        self._events = events
        self._fs = fs
        self._clock = clock
        segment_bytes = min(settings.segment_bytes, settings.max_bytes // MIN_SEGMENTS_PER_SPOOL)
        self._lock = threading.Lock()
        self._readable = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)
        self._commit_lock = threading.Lock()  # one commit file write at a time
        self._files = SegmentFiles(directory, fs, events, self._lock, max(MIN_SEGMENT_BYTES, segment_bytes), self._batch)
        self._hot: deque[HotRecord] = deque()
        self._hot_bytes = 0
        # Records read but not committed: (segment, end, appended_at, frame bytes), in read order.
        self._inflight: deque[tuple[int, int, float, int]] = deque()
        self._cursor = (0, 0)  # position of the next record to read
        self._unread_since: float | None = None  # appended_at of the next unread record (or the last read)
        self._commit = (0, 0)
        self._records = 0
        self._bytes = 0
        self._failed_until = 0.0  # monotonic: no append before this after a disk error
        self._last_error: OSError | None = None
        self._reader: tuple[int, Any] | None = None  # (segment id, open read handle)
        self._syncer: threading.Thread | None = None
        self._closed = False
        self._reader_waiting = False
        self._read_retry_at = 0.0  # monotonic: no disk read before this after a read error

    # -- open / close -------------------------------------------------------------------------------------

    def open(self) -> int:
        """Recover what an earlier run left; returns the records waiting (read first by `read`)."""
        self._commit = self._files.recover()
        files = self._files
        for segment in files.segments.values():
            self._records += segment.records
            self._bytes += segment.frame_bytes
        self._cursor = self._commit
        first = files.segments.get(self._commit[0])
        if first is not None:
            self._cursor = (first.id, max(self._commit[1], first.resume_at))
            self._unread_since = first.first_appended_at
        self._advance_cursor()
        self._syncer = threading.Thread(target=self._sync_loop, name=f"spool-sync-{self._directory.name}", daemon=True)
        self._syncer.start()
        self._events.spool_recovered(self._records, self._bytes)
        return self._records

    def close(self) -> None:
        """Stop the syncer, fsync what is left and close the files. No commit: the caller commits first."""
        self._stop_threads()
        self._files.sync_round()
        with self._lock:
            self._closed = True
            self._readable.notify_all()
            self._space.notify_all()
            self._files.close_all()
            self._close_reader()

    def _stop_threads(self) -> None:
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            self._files.stop_syncer()
            syncer.join(SYNCER_JOIN_S)

    def sync(self) -> bool:
        """fsync everything appended so far, in this thread; True when it all is durable now."""
        return self._files.sync_round()

    def wait_durable(self, timeout_s: float) -> bool:
        """Wait until the syncer made every record appended so far durable (a power loss keeps it)."""
        return self._files.wait_synced(timeout_s)

    def _sync_loop(self) -> None:
        self._files.sync_loop(self._batch, self._interval)

    # -- append ---------------------------------------------------------------------------------------------

    def append(self, data: bytes, event: Any, origin: str, stopping: threading.Event) -> bool:
        """Write one record; False only when `stopping` is set while the spool is full (block policy)."""
        appended_at = self._clock()
        frame = encode_frame(appended_at, origin, data)
        blocked_since: float | None = None
        reported_at = 0.0
        try:
            with self._lock:
                while not self._closed:
                    now = time.monotonic()
                    if now >= self._failed_until:
                        written = self._try_write(frame, appended_at, origin, data, event)
                        if written:
                            return True
                        if written is None:  # a disk error: retry later; drop_oldest frees space meanwhile
                            self._failed_until = time.monotonic() + spool_reading.SPOOL_RETRY_S
                            if self._drop and self._space_error():
                                self._drop_oldest_unread()
                            continue
                        if self._drop and self._room_by_dropping(len(frame)) and self._drop_oldest_unread():
                            continue
                    if stopping.is_set():
                        return False
                    if blocked_since is None:
                        blocked_since = reported_at = now
                    elif now - reported_at >= SPOOL_BLOCKED_REPORT_S:
                        self._events.spool_blocked(now - reported_at)
                        reported_at = now
                    wait = SPOOL_BLOCK_POLL_S
                    if self._failed_until > now:
                        wait = min(wait, self._failed_until - now)
                    self._space.wait(wait)
                return False
        finally:
            if blocked_since is not None:
                self._events.spool_blocked(time.monotonic() - reported_at)

    def _space_error(self) -> bool:
        return self._last_error is not None and self._last_error.errno in _SPACE_ERRNOS

    def _try_write(self, frame: bytes, appended_at: float, origin: str, data: bytes, event: Any) -> bool | None:
        """Under the lock: True written, False no room, None a disk error (reported)."""
        files = self._files
        if not files.fits(len(frame), self._max_bytes):
            return False
        try:
            segment, start = files.write(frame, appended_at, origin)
        except OSError as exc:
            self._last_error = exc
            self._events.spool_write_failed(exc)
            return None
        self._last_error = None
        self._records += 1
        self._bytes += len(frame)
        hot = HotRecord(segment.id, start, segment.end, appended_at, origin, data, event)
        self._hot.append(hot)
        self._hot_bytes += len(data)
        while len(self._hot) > HOT_TAIL_RECORDS or self._hot_bytes > HOT_TAIL_BYTES:
            self._hot_bytes -= len(self._hot.popleft().data)
        if self._reader_waiting:  # one wake-up per wait: Condition.notify costs even with nobody waiting
            self._reader_waiting = False
            self._readable.notify()
        return True

    def _room_by_dropping(self, frame_bytes: int) -> bool:
        """Under the lock: would dropping every unread segment make room? If not, dropping only loses records
        (what fills the spool is in flight): block instead."""
        left = self._files.disk_bytes - self._files.droppable_bytes(self._cursor[0])
        return left == 0 or left + frame_bytes + HEADER_BYTES <= self._max_bytes

    def _drop_oldest_unread(self) -> bool:
        """Under the lock: drop the oldest segment nobody read from; False when there is none."""
        segment = self._files.oldest_after(self._cursor[0])
        if segment is None or not self._files.delete(segment):
            return False
        self._records -= segment.records
        self._bytes -= segment.frame_bytes
        if any(hot.segment == segment.id for hot in self._hot):
            kept = deque(hot for hot in self._hot if hot.segment != segment.id)
            self._hot_bytes = sum(len(hot.data) for hot in kept)
            self._hot = kept
        self._events.spool_dropped(segment.records, segment.first_origin, segment.last_origin)
        return True

    # -- commit / stats ---------------------------------------------------------------------------------------

    def commit(self, position: Sequence[int]) -> None:
        """Everything up to `position` is done: persist that, then delete the segments wholly behind it.

        A failed commit file write is reported (spool_write_failed) and the next commit writes it again; the
        segments wholly behind `position` are deleted all the same - their records are done, and on a full
        disk deleting them is what makes room (the new commit file itself may not fit). A restart before the
        next good write sends the rest of the oldest surviving segment again: duplicates, never a loss.
        A position past what was read is cut back to it.
        """
        with self._commit_lock:
            with self._lock:
                target = min((int(position[0]), int(position[1])), self._cursor)
                if target <= self._commit:
                    return
                inflight = self._inflight
                while inflight and (inflight[0][0], inflight[0][1]) <= target:
                    _, _, _, frame_bytes = inflight.popleft()
                    self._records -= 1
                    self._bytes -= frame_bytes
            try:
                atomic_write(self._fs, self._directory / COMMIT_NAME, encode_commit(*target))
                written = True
            except OSError as exc:
                self._events.spool_write_failed(exc)
                written = False
            with self._lock:
                if written:
                    self._commit = target
                if self._files.delete_behind(target):
                    self._space.notify_all()

    def stats(self) -> SpoolStats:
        """Records not yet committed, their bytes and the age of the oldest (cheap: no I/O, no scan of records)."""
        with self._lock:
            records = self._records
            unread = records - len(self._inflight)
            if self._inflight:
                oldest: float | None = self._inflight[0][2]
            elif unread <= 0:
                oldest = None
            elif unread <= len(self._hot):  # the hot tail holds only unread records, the newest ones
                oldest = self._hot[-unread].appended_at
            else:
                oldest = self._oldest_unread_on_disk()
            age = 0.0 if oldest is None else max(0.0, self._clock() - oldest)
            return SpoolStats(records, self._bytes, age, self._files.disk_bytes)

    def _oldest_unread_on_disk(self) -> float | None:
        segment = self._files.segments.get(self._cursor[0])
        if segment is not None and self._cursor[1] < segment.end:
            return self._unread_since  # within a record: the last one read, or the segment's first
        following = self._files.next_after(self._cursor[0])
        return None if following is None else following.first_appended_at
