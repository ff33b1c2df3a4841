"""Counters of the event-source poller."""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class PollerStats:
    """A snapshot of the runner's counters.

    Every record read ends in exactly one of: `records_succeeded`, `records_sent_to_on_failure`, or (only
    when the runner stopped first) `records_unfinished_at_stop`; those are behind the shard's checkpoint and
    a runner resumed from `EventSourcePoller.checkpoints` reads them again, as Lambda would.
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
        self._counts = {f.name: 0 for f in fields(PollerStats)}

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                self._counts[name] += value  # KeyError on a typo: better than a silently new counter

    def snapshot(self) -> PollerStats:
        with self._lock:
            return replace(PollerStats(), **self._counts)
