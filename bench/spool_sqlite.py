"""The spool on SQLite in WAL mode: the other candidate of issue 16, measured against the segment files by
bench/spool.py. Same public API as daemon/spool.py's `Spool`; lives in bench/ only.

One database `spool.sqlite3` in the spool directory: `records(id INTEGER PRIMARY KEY, appended_at, origin,
data)` with the id as the position (positions are `[id]`), and `meta('committed')`. A commit deletes the rows
at or before it and stores the id in the same transaction; ids are handed out here and continue after the
larger of the newest row and the stored commit, so positions keep increasing even when the table ran empty.
Recovery is SQLite's own (the WAL is replayed when the database is opened).

How records get in (`inserts`):
- "grouped" (the default for fsync=batch): `append` queues the record in memory and returns; a committer
  thread writes everything queued as one transaction. With fsync=batch the connection runs
  synchronous=FULL, so each such commit fsyncs the WAL: a power loss keeps every committed group. NOTE: a
  queued record is in this process's memory only until its group commits, so a process crash loses the
  queue (the segment spool's appends are in the kernel when `append` returns).
- "each" (the default for fsync=interval): `append` commits its record as a transaction of its own at
  synchronous=NORMAL (in the WAL, so in the kernel, when it returns - the segment spool's guarantee). The
  WAL is fsynced by checkpoints, which a syncer thread runs: every `fsync_interval_s` (interval), or
  whenever commits are waiting for one (batch: one checkpoint covers every commit before it).
SQLite's automatic checkpoints are off: the spool runs them itself and counts them (`checkpoints`, those that
synced) and its `commits`; bench/spool.py also counts the fsync system calls (strace). `max_bytes` bounds the
rows' bytes (data + origin + ROW_OVERHEAD_BYTES) and the queue; the file does not shrink (pages are reused).
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from daemon.durable import LOCAL, FileSystem
from daemon.spool import SpooledRecord, SpoolStats  # positions here are [id]
from sources.base import SpoolSettings

DB_NAME = "spool.sqlite3"
FSYNC_POLICIES = ("batch", "interval")
# A row's cost beyond data and origin, for max_bytes: rowid and record header, the f64, the cell pointer.
ROW_OVERHEAD_BYTES = 24
# A committer transaction takes at most this many queued records; the queue holds at most QUEUE_MAX_RECORDS
# (a slow or failing disk makes `append` wait instead of growing memory).
GROUP_MAX_RECORDS = 5000
QUEUE_MAX_RECORDS = 20_000
# The committer checkpoints (grouped inserts) once this much was written since the last checkpoint: SQLite's
# own default, 1,000 pages of 4 KiB.
CHECKPOINT_BYTES = 4 * 1024 * 1024
# drop_oldest drops at least this many unread records at once (one DELETE, not one per append).
DROP_MIN_RECORDS = 256
# The last HOT_TAIL_RECORDS appended events are kept, so a feeder that keeps up gets them without a re-parse
# (as the segment spool's hot tail does).
HOT_TAIL_RECORDS = 1024
SPOOL_RETRY_S = 1.0
SPOOL_BLOCK_POLL_S = 0.05
THREAD_JOIN_S = 10.0
# A busy database (the reader and the checkpointer hold it briefly) is waited for this long.
BUSY_TIMEOUT_S = 10.0


def _row_bytes(data: bytes, origin: bytes) -> int:
    return len(data) + len(origin) + ROW_OVERHEAD_BYTES


def _as_os_error(exc: sqlite3.Error) -> OSError:
    code = errno.ENOSPC if "full" in str(exc) else errno.EIO
    return OSError(code, f"sqlite: {exc}")


class SqliteSpool:
    def __init__(
        self,
        directory: Path,
        settings: SpoolSettings,
        fsync: str,
        fsync_interval_s: float,
        events: Any,
        fs: FileSystem = LOCAL,  # unused: SQLite does its own file I/O (kept for the same signature)
        clock: Callable[[], float] = time.time,
        inserts: Literal["grouped", "each"] | None = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self._path = directory / DB_NAME
        self._directory = directory
        self._max_bytes = settings.max_bytes
        self._drop = settings.when_full == "drop_oldest"
        self._batch = fsync == "batch"
        self._interval = fsync_interval_s
        self._grouped = (inserts or ("grouped" if self._batch else "each")) == "grouped"
        self._events = events
        self._clock = clock
        self._lock = threading.Lock()  # the counters, the queue, the cursor
        self._changed = threading.Condition(self._lock)
        self._write_lock = threading.Lock()  # the writer connection
        self._group_lock = threading.Lock()
        self._read_lock = threading.Lock()  # the reader connection
        self._checkpoint_lock = threading.Lock()  # the checkpointer's connection
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._queue: list[tuple[int, float, bytes, bytes]] = []
        self._hot: OrderedDict[int, Any] = OrderedDict()
        self._inflight: deque[tuple[int, int]] = deque()  # (id, row bytes) read and not committed
        self._next_id = 1
        self._stored_upto = 0  # every id up to this is in the table (or was dropped or committed)
        self._cursor = 0  # the last id read
        self._reading_upto = 0  # ids the reader may be fetching now: never dropped under it
        self._committed = 0
        self._records = 0
        self._bytes = 0
        self._unsynced = False  # commits since the last checkpoint (inserts "each")
        self._since_checkpoint = 0
        self._last_checkpoint: tuple[int, int] | None = None
        self._checkpointed_at = 0.0
        self._failed_until = 0.0
        self._wake_pending = False  # someone waits on _changed since the last notify
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.commits = 0
        self.checkpoints = 0

    # -- open / close -------------------------------------------------------------------------------------

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def open(self) -> int:
        """Open (SQLite replays the WAL) and count what waits; returns the records waiting."""
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        writer = self._writer = self._connect("FULL" if self._batch and self._grouped else "NORMAL")
        writer.execute(
            "CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY, appended_at REAL NOT NULL, "
            "origin BLOB NOT NULL, data BLOB NOT NULL)"
        )
        writer.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        row = writer.execute("SELECT value FROM meta WHERE key = 'committed'").fetchone()
        self._committed = self._cursor = int(row[0]) if row else 0
        count, size, newest = writer.execute(
            "SELECT count(*), coalesce(sum(length(data) + length(origin)), 0) + count(*) * ?, coalesce(max(id), 0) FROM records",
            (ROW_OVERHEAD_BYTES,),
        ).fetchone()
        self._records, self._bytes = int(count), int(size)
        self._stored_upto = max(int(newest), self._committed)
        self._next_id = self._stored_upto + 1
        self._reader = self._connect("NORMAL")
        self._checkpointer = self._connect("NORMAL")
        target = self._commit_loop if self._grouped else self._sync_loop
        self._thread = threading.Thread(target=target, name=f"sqlite-spool-{self._directory.name}", daemon=True)
        self._thread.start()
        self._events.spool_recovered(self._records, self._bytes)
        return self._records

    def close(self) -> None:
        """Write what is queued, fsync (a checkpoint), close. No commit: the caller commits first."""
        self._stop.set()
        with self._lock:
            self._changed.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(THREAD_JOIN_S)
        self.sync()
        with self._lock:
            self._closed = True
            self._changed.notify_all()
        for conn in (self._checkpointer, self._reader, self._writer):
            if conn is not None:
                conn.close()

    def sync(self) -> bool:
        """Write the queue and checkpoint, in this thread; True when everything appended is durable."""
        while self._grouped and self._queue:
            if not self._write_group():
                return False
        return self._checkpoint()

    # -- the writer's threads -----------------------------------------------------------------------------

    def _commit_loop(self) -> None:
        """inserts "grouped": write each queued group as one transaction; checkpoint now and then."""
        while True:
            with self._lock:
                if not self._queue and not self._stop.is_set():
                    self._wait(None if self._batch else self._interval)
                if self._stop.is_set() and not self._queue:
                    return
                wait = self._failed_until - time.monotonic()
                queued = bool(self._queue)
            if wait > 0:
                self._stop.wait(wait)
                continue
            if queued:
                self._write_group()
            if self._since_checkpoint >= CHECKPOINT_BYTES or (not self._batch and self._unsynced and self._interval_due()):
                self._checkpoint()

    def _interval_due(self) -> bool:
        return time.monotonic() - self._checkpointed_at >= self._interval

    def _transaction(self, statements: Callable[[sqlite3.Connection], object]) -> None:
        assert self._writer is not None
        with self._write_lock:
            self._writer.execute("BEGIN")
            try:
                statements(self._writer)
                self._writer.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise

    def _write_group(self) -> bool:
        with self._group_lock:  # the committer thread and sync() take groups from the queue in turn
            with self._lock:
                group = self._queue[:GROUP_MAX_RECORDS]
            if not group:
                return True
            return self._insert_group(group)

    def _insert_group(self, group: list[tuple[int, float, bytes, bytes]]) -> bool:
        started = time.perf_counter()
        try:
            self._transaction(lambda writer: writer.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", group))
        except sqlite3.Error as exc:
            self._failed(exc)
            return False
        self._count_commit(started)
        self._since_checkpoint += sum(len(row[2]) + len(row[3]) for row in group)
        with self._lock:
            del self._queue[: len(group)]
            self._unsynced = True
            self._stored_upto = max(self._stored_upto, group[-1][0])
            self._wake()
        return True

    def _sync_loop(self) -> None:
        """inserts "each": the commits are in the WAL; a checkpoint fsyncs it (batch: whenever some wait)."""
        while not self._stop.is_set():
            if self._batch:
                with self._lock:
                    while not self._unsynced and not self._stop.is_set():
                        self._wait()
            else:
                self._stop.wait(self._interval)
            if self._unsynced:
                self._checkpoint()

    def _checkpoint(self) -> bool:
        """A passive checkpoint on a connection of its own (appends and reads go on meanwhile); True when every
        frame was backfilled (everything committed so far is durable)."""
        assert self._checkpointer is not None
        started = time.perf_counter()
        with self._lock:
            self._unsynced = False
        try:
            with self._checkpoint_lock:
                busy, log, backfilled = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            self._failed(exc)
            return False
        self._checkpointed_at = time.monotonic()
        self._since_checkpoint = 0
        if (log, backfilled) != self._last_checkpoint and backfilled > 0:  # else it had nothing to do
            self.checkpoints += 1
            self._events.spool_fsync(time.perf_counter() - started)
        self._last_checkpoint = (log, backfilled)
        return bool(busy == 0 and log == backfilled)

    def _wait(self, timeout: float | None = None) -> None:
        """Under the lock: wait for a change. The next change notifies once, not every append while we wait
        (a notify per append costs about as much as the append)."""
        self._wake_pending = True
        self._changed.wait(timeout)

    def _wake(self) -> None:
        if self._wake_pending:
            self._wake_pending = False
            self._changed.notify_all()

    def _count_commit(self, started: float) -> None:
        self.commits += 1
        if self._batch and self._grouped:  # synchronous=FULL: each commit fsyncs the WAL
            self._events.spool_fsync(time.perf_counter() - started)

    def _failed(self, exc: sqlite3.Error) -> None:
        self._events.spool_write_failed(_as_os_error(exc))
        with self._lock:
            self._failed_until = time.monotonic() + SPOOL_RETRY_S

    # -- append -----------------------------------------------------------------------------------------------

    def append(self, data: bytes, event: Any, origin: str, stopping: threading.Event) -> bool:
        """Store one record; False only when `stopping` is set while the spool is full (block policy)."""
        row = (0, self._clock(), origin.encode(), data)
        size = _row_bytes(data, row[2])
        while True:  # a failed insert is retried once _reserve let SPOOL_RETRY_S pass
            row = (self._reserve(row, size, event, stopping), *row[1:])
            if row[0] == 0:
                return False
            if self._grouped or self._insert(row, size):
                return True

    def _reserve(self, row: tuple[int, float, bytes, bytes], size: int, event: Any, stopping: threading.Event) -> int:
        """Wait for room, count the record and give it its id (0: stopping or closed). Grouped: queue it."""
        blocked_since: float | None = None
        try:
            with self._lock:
                while not self._closed:
                    room = self._bytes + size <= self._max_bytes and len(self._queue) < QUEUE_MAX_RECORDS
                    if not room and self._drop and self._drop_oldest_unread():
                        continue
                    if room and time.monotonic() >= self._failed_until:
                        row_id = self._next_id
                        self._next_id += 1
                        self._records += 1
                        self._bytes += size
                        self._hot[row_id] = event
                        if len(self._hot) > HOT_TAIL_RECORDS:
                            self._hot.popitem(last=False)
                        if self._grouped:
                            self._queue.append((row_id, *row[1:]))
                            self._wake()
                        return row_id
                    if stopping.is_set():
                        return 0
                    if blocked_since is None:
                        blocked_since = time.monotonic()
                    self._wait(SPOOL_BLOCK_POLL_S)
                return 0
        finally:
            if blocked_since is not None:
                self._events.spool_blocked(time.monotonic() - blocked_since)

    def _insert(self, row: tuple[int, float, bytes, bytes], size: int) -> bool:
        """inserts "each": one record, one transaction at synchronous=NORMAL, outside the spool's lock (the
        syncer and the reader go on meanwhile). One source thread appends, so ids reach the table in order."""
        assert self._writer is not None
        started = time.perf_counter()
        try:
            with self._write_lock:
                self._writer.execute("INSERT INTO records VALUES (?, ?, ?, ?)", row)
        except sqlite3.Error as exc:
            self._events.spool_write_failed(_as_os_error(exc))
            with self._lock:  # take the reservation back; retried after SPOOL_RETRY_S
                self._next_id -= 1
                self._records -= 1
                self._bytes -= size
                self._hot.pop(row[0], None)
                self._failed_until = time.monotonic() + SPOOL_RETRY_S
            return False
        self._count_commit(started)
        with self._lock:
            self._stored_upto = row[0]
            self._unsynced = True
            self._wake()
        return True

    def _drop_oldest_unread(self) -> bool:
        """Under the lock: delete the oldest stored rows nobody reads; False when there are none."""
        assert self._writer is not None
        floor = max(self._cursor, self._reading_upto)
        try:
            with self._write_lock:
                rows = self._writer.execute(
                    "SELECT id, origin, length(data) + length(origin) FROM records WHERE id > ? ORDER BY id LIMIT ?",
                    (floor, DROP_MIN_RECORDS),
                ).fetchall()
                if not rows:
                    return False
                self._writer.execute("DELETE FROM records WHERE id > ? AND id <= ?", (floor, rows[-1][0]))
        except sqlite3.Error as exc:
            self._events.spool_write_failed(_as_os_error(exc))
            return False
        self._records -= len(rows)
        self._bytes -= sum(row[2] + ROW_OVERHEAD_BYTES for row in rows)
        for row in rows:
            self._hot.pop(row[0], None)
        self._events.spool_dropped(len(rows), rows[0][1].decode(), rows[-1][1].decode())
        return True

    # -- read -------------------------------------------------------------------------------------------------

    def read(self, max_records: int, timeout_s: float) -> list[SpooledRecord]:
        """The next records in append order (at most `max_records`); waits up to `timeout_s` for the first."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._stored_upto <= self._cursor and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._wait(remaining)
            if self._closed:
                return []
            # Ids up to `upper` are all stored (or were dropped); drops stay above it while we read, so after the
            # read every id up to it was read or dropped, and the cursor moves past gaps drop_oldest left.
            cursor = self._cursor
            upper = self._reading_upto = min(cursor + max_records, self._stored_upto)
        assert self._reader is not None
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT id, appended_at, origin, data FROM records WHERE id > ? AND id <= ? ORDER BY id", (cursor, upper)
            ).fetchall()
        out: list[SpooledRecord] = []
        with self._lock:
            for row_id, appended_at, origin, data in rows:
                out.append(SpooledRecord(data, self._hot.pop(row_id, None), origin.decode(), [row_id], appended_at))
                self._inflight.append((row_id, _row_bytes(data, origin)))
            self._cursor = upper
            self._reading_upto = 0
        return out

    # -- commit / stats ---------------------------------------------------------------------------------------

    def commit(self, position: Sequence[int]) -> None:
        """Everything up to `position` is done: delete those rows and store the position, one transaction."""
        with self._lock:
            target = min(int(position[0]), self._cursor)
            if target <= self._committed:
                return
        started = time.perf_counter()

        def delete(writer: sqlite3.Connection) -> None:
            writer.execute("DELETE FROM records WHERE id <= ?", (target,))
            writer.execute("INSERT OR REPLACE INTO meta VALUES ('committed', ?)", (target,))

        try:
            self._transaction(delete)
        except sqlite3.Error as exc:
            self._events.spool_write_failed(_as_os_error(exc))
            return
        self._count_commit(started)
        with self._lock:
            self._unsynced = True
            self._committed = target
            while self._inflight and self._inflight[0][0] <= target:
                self._records -= 1
                self._bytes -= self._inflight.popleft()[1]
            self._changed.notify_all()

    def stats(self) -> SpoolStats:
        assert self._reader is not None
        with self._read_lock:
            row = self._reader.execute("SELECT appended_at FROM records ORDER BY id LIMIT 1").fetchone()
        with self._lock:
            oldest = row[0] if row else (self._queue[0][1] if self._queue else None)
            records, size = self._records, self._bytes
        disk = sum(path.stat().st_size for path in self._directory.glob(DB_NAME + "*"))
        age = 0.0 if oldest is None or records <= 0 else max(0.0, self._clock() - oldest)
        return SpoolStats(records, size, age, disk)
