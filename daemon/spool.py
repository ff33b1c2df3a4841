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

from daemon.durable import LOCAL, FileSystem, atomic_write
from daemon.spool_files import SegmentFiles, SpoolSegment
from daemon.spool_segments import COMMIT_NAME, Frame, FrameReader, encode_commit, encode_frame
from daemon.spool_types import HotRecord, SpooledRecord, SpoolEvents, SpoolStats
from sources.base import SpoolSettings

__all__ = ["Spool", "SpoolEvents", "SpoolStats", "SpooledRecord"]

# After a disk error, appends are retried this often (the source waits meanwhile).
SPOOL_RETRY_S = 1.0
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


class Spool:
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
                            self._failed_until = time.monotonic() + SPOOL_RETRY_S
                            if self._drop and self._space_error():
                                self._drop_oldest_unread()
                            continue
                        if self._drop and self._drop_oldest_unread():
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

    # -- read -------------------------------------------------------------------------------------------------

    def read(self, max_records: int, timeout_s: float) -> list[SpooledRecord]:
        """The next records in append order (at most `max_records`); waits up to `timeout_s` for the first."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                if self._closed:
                    return []
                if self._reader is not None and self._reader[0] not in self._files.segments:
                    self._close_reader()  # its segment was committed and deleted: an open handle keeps its space
                self._advance_cursor()
                hot = self._hot
                segment = self._files.segments.get(self._cursor[0])
                if hot and (hot[0].segment, hot[0].start) == self._cursor:
                    return self._read_hot(max_records)
                now = time.monotonic()
                if segment is not None and now >= self._read_retry_at:
                    limit = hot[0].start if hot and hot[0].segment == segment.id else segment.end
                    if self._cursor[1] < limit:
                        offset = self._cursor[1]
                        break
                remaining = deadline - now
                if remaining <= 0:
                    return []
                if self._read_retry_at > now:
                    remaining = min(remaining, self._read_retry_at - now)
                self._reader_waiting = True
                try:
                    self._readable.wait(remaining)
                finally:
                    self._reader_waiting = False
        return self._read_disk(segment, offset, limit, max_records)

    def _read_hot(self, max_records: int) -> list[SpooledRecord]:
        out: list[SpooledRecord] = []
        hot, inflight = self._hot, self._inflight
        cursor = self._cursor
        taken_bytes = 0
        while hot and len(out) < max_records:
            item = hot[0]
            if item.start != cursor[1] or item.segment != cursor[0]:
                self._cursor = cursor
                self._advance_cursor()  # the next record may open the following segment
                cursor = self._cursor
                if item.start != cursor[1] or item.segment != cursor[0]:
                    break
            hot.popleft()
            taken_bytes += len(item.data)
            out.append(SpooledRecord(item.data, item.event, item.origin, [item.segment, item.end], item.appended_at))
            inflight.append((item.segment, item.end, item.appended_at, item.end - item.start))
            cursor = (item.segment, item.end)
        self._cursor = cursor
        self._hot_bytes -= taken_bytes
        if out:
            self._unread_since = out[-1].appended_at  # the next unread came later: an estimate, within a record
        return out

    def _read_disk(self, segment: SpoolSegment, offset: int, limit: int, max_records: int) -> list[SpooledRecord]:
        # Outside the lock: the cursor segment is never dropped or deleted under the reader (drops take only
        # segments after it, commits only what was read), and its bytes before `limit` never change.
        frames: list[Frame] = []
        error: str | None = None
        failure: OSError | None = None
        try:
            reader = FrameReader(self._reader_for(segment), offset, limit)
            for frame in reader:
                frames.append(frame)
                if len(frames) >= max_records:
                    break
            error = reader.error
            stopped_at = reader.offset
        except OSError as exc:  # EIO, EMFILE...: the bytes may well be fine; try again later, skip nothing
            failure = exc
            stopped_at = frames[-1].end if frames else offset
            self._close_reader()
        out = [SpooledRecord(f.data, None, f.origin, [segment.id, f.end], f.appended_at) for f in frames]
        with self._lock:
            for frame in frames:
                self._inflight.append((segment.id, frame.end, frame.appended_at, frame.end - frame.start))
                segment.read_bytes += frame.end - frame.start
            segment.read += len(frames)
            if frames:
                self._cursor = (segment.id, frames[-1].end)
                self._unread_since = frames[-1].appended_at
            if failure is not None:
                self._read_retry_at = time.monotonic() + SPOOL_RETRY_S
                detail = f"read failed: {failure}; retried in {SPOOL_RETRY_S} s"
                self._events.spool_corrupt(str(segment.path), stopped_at, detail)
            elif error is not None:
                self._skip_rest(segment, stopped_at, error)
        return out

    def _skip_rest(self, segment: SpoolSegment, offset: int, error: str) -> None:
        """Under the lock: bytes that were good when written no longer read back; give up on the segment."""
        lost = segment.records - segment.read
        self._events.spool_corrupt(str(segment.path), offset, f"{error}; {lost} records after it skipped")
        self._records -= lost
        self._bytes -= segment.frame_bytes - segment.read_bytes
        segment.read = segment.records
        segment.read_bytes = segment.frame_bytes
        self._files.seal(segment)
        self._cursor = (segment.id, segment.end)
        self._hot = deque(hot for hot in self._hot if hot.segment != segment.id)
        self._hot_bytes = sum(len(hot.data) for hot in self._hot)

    def _reader_for(self, segment: SpoolSegment) -> Any:
        if self._reader is not None and self._reader[0] == segment.id:
            return self._reader[1]
        self._close_reader()
        handle = self._fs.open_read(segment.path)
        self._reader = (segment.id, handle)
        return handle

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader[1].close()

    def _advance_cursor(self) -> None:
        """Under the lock: move the cursor past the end of sealed (or deleted) segments to the next one."""
        segments = self._files.segments
        while True:
            segment = segments.get(self._cursor[0])
            if segment is not None and (not segment.sealed or self._cursor[1] < segment.end):
                return
            following = self._files.next_after(self._cursor[0])
            if following is None:
                return
            self._cursor = (following.id, following.start)
            self._unread_since = following.first_appended_at

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
