"""The bounded buffer between sources and the sink: sources block while it is full, so memory stays bounded."""

from __future__ import annotations

import threading
from collections import deque

from sinks.base import Record

# How often a blocked producer re-checks whether the daemon is stopping.
_BLOCKED_PUT_RECHECK_S = 0.25


class RecordBuffer:
    """A FIFO bounded by record count and by bytes of record data."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._items: deque[Record] = deque()
        self._bytes = 0
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

    def put(self, record: Record, stopping: threading.Event) -> bool:
        """Append `record`, waiting for room; returns False (record not taken) once `stopping` is set."""
        size = len(record.data)
        with self._not_full:
            # A record larger than max_bytes is still let into an empty buffer, or it could never pass.
            while self._items and (len(self._items) >= self.max_records or self._bytes + size > self.max_bytes):
                if stopping.is_set():
                    return False
                self._not_full.wait(_BLOCKED_PUT_RECHECK_S)
            if stopping.is_set():
                return False
            self._items.append(record)
            self._bytes += size
            self._not_empty.notify()
            return True

    def get(self, timeout: float) -> Record | None:
        """Take the oldest record, waiting up to `timeout` seconds; None when still empty."""
        with self._not_empty:
            if not self._items and timeout > 0:
                self._not_empty.wait(timeout)
            if not self._items:
                return None
            record = self._items.popleft()
            self._bytes -= len(record.data)
            self._not_full.notify()
            return record

    def drain(self) -> list[Record]:
        """Take everything left (at shutdown, for accounting)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._bytes = 0
            self._not_full.notify_all()
            return items
