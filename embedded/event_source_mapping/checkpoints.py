"""The checkpoint algorithm: advance over the contiguous prefix of finished records, never past a gap."""

from __future__ import annotations

import threading
from collections import deque


class ShardProgress:
    """The checkpoint of one shard: the last sequence number before which every record is done.

    Records are registered in read order; lanes finish them out of order (one lane per partition-key group),
    so the checkpoint only moves over a prefix of finished records, as Lambda's does.
    """

    def __init__(self, checkpoint: str | None = None) -> None:
        self._lock = threading.Lock()
        self._pending: deque[str] = deque()
        self._done: set[str] = set()
        self._checkpoint = checkpoint

    def read(self, sequence_number: str) -> None:
        with self._lock:
            self._pending.append(sequence_number)

    def done(self, sequence_numbers: list[str]) -> None:
        with self._lock:
            self._done.update(sequence_numbers)
            while self._pending and self._pending[0] in self._done:
                finished = self._pending.popleft()
                self._done.discard(finished)
                self._checkpoint = finished

    @property
    def checkpoint(self) -> str | None:
        with self._lock:
            return self._checkpoint

    @property
    def outstanding(self) -> int:
        """Records read and not yet done (succeeded or sent to the on-failure destination)."""
        with self._lock:
            return len(self._pending)
