"""The feeder's side of the spool: `read` serves records in append order from the in-memory hot tail or, when
the feeder fell behind it, from the segment files; `Spool` (daemon/spool.py) mixes it in.

The reader thread alone moves the cursor and owns the read handle. Disk reads run outside the lock: the
segment under the cursor is never dropped or deleted meanwhile (drops take only segments after it, commits
only what was read), and its bytes before the known good end never change.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from daemon.durable import FileSystem
from daemon.spool_files import SegmentFiles, SpoolSegment
from daemon.spool_segments import READ_CHUNK_BYTES, FrameReader, decode_payload
from daemon.spool_types import HotRecord, SpooledRecord, SpoolEvents

# After a disk error (writing or reading), the spool tries again this often.
SPOOL_RETRY_S = 1.0


class SpoolReading:
    """State the reader shares with the rest of the spool; set up by `Spool.__init__`."""

    _lock: threading.Lock
    _readable: threading.Condition
    _fs: FileSystem
    _events: SpoolEvents
    _files: SegmentFiles
    _hot: deque[HotRecord]
    _hot_bytes: int
    _inflight: deque[tuple[int, int, float, int]]
    _cursor: tuple[int, int]
    _unread_since: float | None
    _records: int
    _bytes: int
    _reader: tuple[int, Any] | None
    _reader_waiting: bool
    _read_retry_at: float
    _closed: bool

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
        # Outside the lock: see the module docstring.
        out: list[SpooledRecord] = []
        entries: list[tuple[int, int, float, int]] = []  # for _inflight
        error: str | None = None
        failure: OSError | None = None
        segment_id = segment.id
        end = offset
        try:
            reader = FrameReader(self._reader_for(segment), offset, limit, READ_CHUNK_BYTES)
            for start, payload in reader.raw():
                appended_at, origin, data = decode_payload(payload)
                end = reader.offset
                out.append(SpooledRecord(data, None, origin, [segment_id, end], appended_at))
                entries.append((segment_id, end, appended_at, end - start))
                if len(out) >= max_records:
                    break
            error = reader.error
        except OSError as exc:  # EIO, EMFILE...: the bytes may well be fine; try again later, skip nothing
            failure = exc
            self._close_reader()
        with self._lock:
            self._inflight.extend(entries)
            segment.read += len(entries)
            segment.read_bytes += end - offset
            if out:
                self._cursor = (segment_id, end)
                self._unread_since = out[-1].appended_at
            if failure is not None:
                self._read_retry_at = time.monotonic() + SPOOL_RETRY_S
                detail = f"read failed: {failure}; retried in {SPOOL_RETRY_S} s"
                self._events.spool_corrupt(str(segment.path), end, detail)
            elif error is not None:
                self._skip_rest(segment, end, error)
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
