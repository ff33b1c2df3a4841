"""The bounded buffer between sources and the sink: sources block while it is full, so memory stays bounded.

It holds entries the sink already prepared (at emit time, in the source's thread), with the parsed event
dropped: what a buffered record costs is its bytes, its key and origin, and the objects around them, which
`entry_bytes` estimates. `max_bytes` therefore bounds the memory the buffer holds, not only the payload.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from sinks.base import Entry

# How often a blocked producer re-checks whether the daemon is stopping.
_BLOCKED_PUT_RECHECK_S = 0.25
# What one buffered record costs beyond its data, key and origin bytes: the Record and entry objects (slots
# dataclasses), the bytes and str object headers, the buffer's (entry, size) pair and deque slot. Measured
# with tracemalloc on CPython 3.11 at about 380 bytes for a Kinesis entry; rounded up for other sinks' entries.
RECORD_OVERHEAD_BYTES = 400


def entry_bytes(entry: Entry) -> int:
    """Memory one buffered entry holds: data + key (the entry's size, at least the data) + origin + overhead."""
    record = entry.record
    return max(entry.size, len(record.data)) + len(record.origin) + RECORD_OVERHEAD_BYTES


class RecordBuffer:
    """A FIFO of prepared entries bounded by count and by `entry_bytes`."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._items: deque[tuple[Entry, int]] = deque()
        self._bytes = 0
        self._blocked = 0  # producers waiting for room
        self._waiting_getters = 0  # the worker waiting for a first entry: notified only then
        self._fill_target = 0  # entries the worker is gathering towards (0: not gathering)
        self._closed = False
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._not_empty = threading.Condition(self._lock)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return self._bytes

    @property
    def blocked_producers(self) -> int:
        """Sources waiting in `put` for room right now."""
        with self._lock:
            return self._blocked

    def put(self, entry: Entry, stopping: threading.Event) -> bool:
        """Append `entry`, waiting for room; returns False (entry not taken) once `stopping` is set or closed."""
        record = entry.record
        data_size = len(record.data)
        entry_size = entry.size
        # entry_bytes(entry), inlined: this runs once per record.
        size = (entry_size if entry_size > data_size else data_size) + len(record.origin) + RECORD_OVERHEAD_BYTES
        with self._lock:
            items = self._items
            # An entry larger than max_bytes is still let into an empty buffer, or it could never pass.
            full = items and (len(items) >= self.max_records or self._bytes + size > self.max_bytes)
            if full and not self._wait_for_room(size, stopping):
                return False
            if stopping.is_set() or self._closed:
                return False
            items.append((entry, size))
            self._bytes += size
            if self._waiting_getters or (self._fill_target and len(items) >= self._fill_target):
                self._not_empty.notify()
            return True

    def _gather(self, wanted: int, fill_s: float) -> None:
        """With the lock held: wait until `wanted` entries are in, the buffer is full, it closed, or `fill_s` passed."""
        end = time.monotonic() + fill_s
        self._fill_target = wanted
        try:
            while len(self._items) < wanted and not self._closed and not self._blocked:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return
                self._not_empty.wait(remaining)
        finally:
            self._fill_target = 0

    def _wait_for_room(self, size: int, stopping: threading.Event) -> bool:
        """With the lock held: wait until `size` fits; False once stopping or closed."""
        items = self._items
        while items and (len(items) >= self.max_records or self._bytes + size > self.max_bytes):
            if stopping.is_set() or self._closed:
                return False
            if self._fill_target:  # a consumer gathering a chunk must not wait for room that will never come
                self._not_empty.notify()
            self._blocked += 1
            try:
                self._not_full.wait(_BLOCKED_PUT_RECHECK_S)
            finally:
                self._blocked -= 1
        return True

    def get_many(self, max_entries: int, timeout: float, fill_s: float = 0.0) -> list[Entry]:
        """Take up to `max_entries` of the oldest entries, waiting up to `timeout` seconds for a first one and
        then up to `fill_s` more for `max_entries` to gather: a consumer woken for every single record would
        pay its per-batch work per record."""
        with self._lock:
            if not self._items and timeout > 0:
                self._waiting_getters += 1
                try:
                    self._not_empty.wait(timeout)
                finally:
                    self._waiting_getters -= 1
            if fill_s > 0 and self._items and len(self._items) < max_entries:
                self._gather(max_entries, fill_s)
            items = self._items
            taken: list[Entry] = []
            freed = 0
            while items and len(taken) < max_entries:
                entry, size = items.popleft()
                taken.append(entry)
                freed += size
            if taken:
                self._bytes -= freed
                if self._blocked:
                    self._not_full.notify_all()
            return taken

    def close(self) -> None:
        """Refuse every later `put` (at shutdown, once the sources were stopped or abandoned)."""
        with self._lock:
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()  # a worker gathering a chunk takes what is there

    def drain(self) -> list[Entry]:
        """Take everything left (at shutdown, for accounting)."""
        with self._lock:
            items = [entry for entry, _ in self._items]
            self._items.clear()
            self._bytes = 0
            self._not_full.notify_all()
            return items
