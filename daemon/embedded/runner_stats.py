"""Counters of the event-source runner and the per-shard checkpoint it keeps."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class RunnerStats:
    """A snapshot of the runner's counters.

    Every record read ends in exactly one of: `records_succeeded`, `records_sent_to_on_failure`, or (only
    when the runner stopped first) `records_unfinished_at_stop`; those are behind the shard's checkpoint and
    a runner resumed from `EventSourceRunner.checkpoints` reads them again, as Lambda would.
    """

    invocations: int = 0
    records_delivered: int = 0  # records handed to the function, counting each retry again
    function_errors: int = 0  # exceptions, timeouts and unserializable responses
    function_timeouts: int = 0
    partial_failures: int = 0  # responses naming failed records
    invalid_responses: int = 0  # responses Lambda would treat as a failure of the whole batch
    records_read: int = 0
    records_succeeded: int = 0
    batches_sent_to_on_failure: int = 0
    records_sent_to_on_failure: int = 0
    on_failure_errors: int = 0  # failed calls to the on-failure destination (each retried)
    records_unfinished_at_stop: int = 0
    endpoint_errors: int = 0
    iterator_refreshes: int = 0
    shards_started: int = 0
    shards_finished: int = 0  # closed shards read to their end, every record done
    internal_errors: int = 0  # unexpected exceptions in a runner thread (logged, then retried)


class StatsRecorder:
    """Thread-safe counters; `snapshot()` gives a consistent copy."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {f.name: 0 for f in fields(RunnerStats)}

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                self._counts[name] += value  # KeyError on a typo: better than a silently new counter

    def snapshot(self) -> RunnerStats:
        with self._lock:
            return replace(RunnerStats(), **self._counts)


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
