"""A source's acknowledged prefix: records are emitted in order and acknowledged in any order; the
checkpoint may only pass a record once it and every record before it reached their end.

`ProgressWindow` numbers each record a checkpointed source hands over (the number travels as the record's
token), remembers its `(key, position)` token, and folds the tokens of the longest acknowledged prefix into
`committed`: per key, the position after the last record of that prefix. A gap - a record still in flight,
or unsent at shutdown - holds everything after it back, however many later records were acknowledged.

The record path pays little for it: `emitted` appends to lists without a lock (one thread emits into a
window), `acknowledged` sets a flag per record and finds the prefix's new end with one `bytearray.find`, and
the fold into `committed` happens when the checkpoint thread asks, with `dict.update` over the new prefix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable
from typing import Any

# The checkpoint thread drops the folded part of the lists once it is this long (a slice delete per round).
_TRIM_AT = 4096


class ProgressWindow:
    """Emitted from one thread (the source's, or a spool's feeder); acknowledged from the sink's threads; read
    by the checkpoint thread."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0  # number the next emitted record gets
        # Per record from number `_offset` on: its token's key and position, when it was emitted, and whether it
        # was acknowledged. Appended by `emitted` (list and bytearray appends are atomic under the GIL).
        self._keys: list[Hashable] = []
        self._positions: list[Any] = []
        self._times: list[float] = []
        self._acked = bytearray()
        self._offset = 0
        self._base = 0  # number of the oldest record not yet in the prefix
        self._folded = 0  # records of the prefix already folded into `_committed`
        self._committed: dict[Hashable, Any] = {}

    def emitted(self, key: Hashable, position: Any) -> int:
        """Register the next record's token; returns the number to acknowledge it by."""
        number = self._next
        self._keys.append(key)
        self._positions.append(position)
        self._times.append(self._clock())
        self._acked.append(0)
        self._next = number + 1  # last: `lag` counts only records whose every entry is stored
        return number

    def acknowledged(self, numbers: Iterable[int]) -> None:
        """These records reached their end (in any order); the prefix moves over every one it now reaches."""
        with self._lock:
            acked, offset = self._acked, self._offset
            for number in numbers:
                index = number - offset
                if index >= 0:  # below: already in the prefix (and trimmed); nothing to mark
                    acked[index] = 1
            start = self._base - offset
            if start < len(acked) and acked[start]:
                end = acked.find(0, start)
                self._base = offset + (len(acked) if end < 0 else end)

    @property
    def committed_records(self) -> int:
        """Records in the acknowledged prefix, this run."""
        return self._base

    def committed(self) -> dict[Hashable, Any]:
        """Per key, the position after the last record of the acknowledged prefix (a copy)."""
        with self._lock:
            offset, base = self._offset, self._base
            start, end = self._folded - offset, base - offset
            if end > start:
                # Later positions of a key overwrite earlier ones: the last one in the prefix wins.
                self._committed.update(zip(self._keys[start:end], self._positions[start:end], strict=True))
                self._folded = base
            if end >= _TRIM_AT:
                del self._keys[:end], self._positions[:end], self._times[:end], self._acked[:end]
                self._offset = base
            return dict(self._committed)

    def lag(self) -> tuple[int, float]:
        """Records handed over but not yet in the prefix, and the age in seconds of the oldest of them."""
        with self._lock:
            pending = self._next - self._base
            if pending <= 0:
                return 0, 0.0
            oldest = self._times[self._base - self._offset]
            return pending, max(0.0, self._clock() - oldest)
