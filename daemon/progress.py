"""A source's acknowledged prefix: records are emitted in order and acknowledged in any order; the
checkpoint may only pass a record once it and every record before it reached their end.

`ProgressWindow` numbers each record a checkpointed source hands over (the number travels as the record's
token), remembers its `(key, position)` token, and folds the tokens of the longest acknowledged prefix into
`committed`: per key, the position after the last record of that prefix. A gap - a record still in flight,
or unsent at shutdown - holds everything after it back, however many later records were acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Hashable, Iterable
from typing import Any


class ProgressWindow:
    """Emitted from one source thread; acknowledged from the sink's threads; read by the checkpoint thread."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._base = 0  # number of the oldest record not yet in the prefix
        self._next = 0  # number the next emitted record gets
        # Tokens of records _base, _base + 1, ... and when each was emitted (for the lag in seconds).
        self._pending: deque[tuple[Hashable, Any, float]] = deque()
        self._acked: set[int] = set()  # acknowledged numbers above the prefix (out of order)
        self._committed: dict[Hashable, Any] = {}
        self.committed_records = 0  # records in the prefix, this run

    def emitted(self, key: Hashable, position: Any) -> int:
        """Register the next record's token; returns the number to acknowledge it by."""
        now = self._clock()
        with self._lock:
            number = self._next
            self._next = number + 1
            self._pending.append((key, position, now))
            return number

    def acknowledged(self, numbers: Iterable[int]) -> None:
        """These records reached their end (in any order); the prefix moves over every one it now reaches."""
        with self._lock:
            acked = self._acked
            acked.update(numbers)
            base = self._base
            if base not in acked:
                return
            pending = self._pending
            committed = self._committed
            moved = 0
            while base in acked:
                acked.remove(base)
                key, position, _ = pending.popleft()
                committed[key] = position
                base += 1
                moved += 1
            self._base = base
            self.committed_records += moved

    @property
    def emitted_records(self) -> int:
        """Records numbered so far in this run."""
        return self._next

    def committed(self) -> dict[Hashable, Any]:
        """Per key, the position after the last record of the acknowledged prefix (a copy)."""
        with self._lock:
            return dict(self._committed)

    def lag(self) -> tuple[int, float]:
        """Records handed over but not yet in the prefix, and the age in seconds of the oldest of them."""
        with self._lock:
            if not self._pending:
                return 0, 0.0
            return len(self._pending), max(0.0, self._clock() - self._pending[0][2])
