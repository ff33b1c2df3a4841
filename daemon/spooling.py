"""A live source's records go through its durable spool: the source appends (and never waits for the sink),
a feeder thread moves spooled records on into the buffer, and the spool's commit follows the acknowledged
prefix (daemon/checkpointing.py), so a record leaves the disk only once delivered or dead-lettered.

    source thread --emit--> Spool.append (counted received) ... feeder --read--> SourceContext.forward -> buffer
"""

from __future__ import annotations

import threading
from typing import Any

from daemon.pipeline import SourceContext
from daemon.spool import Spool
from sources.parsing import Rejection, parse_json_record

# Records the feeder moves per read; the buffer's own chunking takes it from there.
FEED_CHUNK = 500
# How long the feeder waits for a spooled record before re-checking whether the daemon is stopping.
FEED_IDLE_POLL_S = 0.2
# Spooled records were whole records when appended; this only bounds a re-parse of damaged bytes.
REPARSE_MAX_BYTES = 16 * 1024 * 1024


class SpoolingContext:
    """The context a spooled source is handed: `emit` appends to the spool; the rest is its source context's."""

    def __init__(self, inner: SourceContext, spool: Spool, give_up: threading.Event) -> None:
        self.inner = inner
        self.spool = spool
        self._give_up = give_up  # when an append waiting for room in a full spool is given up

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def stopping(self) -> bool:
        return self.inner.stopping

    def close(self) -> None:
        self.inner.close()

    def emit(self, data: bytes, event: Any, origin: str, token: Any = None) -> bool:
        if self.inner.stopping:
            return False
        if self.inner.transform is not None:
            # Before the spool: filtered records never take disk, and the spool holds the bytes that are shipped.
            transformed = self.inner.transform_for_spool(data, event, origin)
            if transformed is None:
                return True  # filtered out or dead-lettered: done, and counted
            data, event = transformed
        if not self.spool.append(data, event, origin, self._give_up):
            return False  # stopping while the spool was full: not taken, the source keeps it
        self.inner.count_received()
        return True

    def reject(self, data: bytes, origin: str, reason: str, detail: str, token: Any = None) -> None:
        self.inner.reject(data, origin, reason, detail)  # not spooled: done once dead-lettered, nothing to commit

    def wait(self, seconds: float) -> bool:
        return self.inner.wait(seconds)

    def connection(self, connected: bool, detail: str = "") -> None:
        self.inner.connection(connected, detail)

    def reconnecting(self, reason: str, delay_s: float, detail: str = "") -> None:
        self.inner.reconnecting(reason, delay_s, detail)

    def protocol_message(self, kind: str, detail: str) -> None:
        self.inner.protocol_message(kind, detail)


class SpoolFeeder:
    """Moves one spool's records, in order, into the record path; stops with the daemon (the rest stays spooled)."""

    def __init__(self, context: SourceContext, spool: Spool, stopping: threading.Event, on_failure: Any) -> None:
        self.context = context
        self.spool = spool
        self.stopping = stopping
        self.on_failure = on_failure  # called with the exception if the feeder dies of a bug
        self.thread = threading.Thread(target=self._run, name=f"spool-feeder-{context.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout_s: float) -> bool:
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def _run(self) -> None:
        forward = self.context.forward
        try:
            while not self.stopping.is_set():
                for spooled in self.spool.read(FEED_CHUNK, FEED_IDLE_POLL_S):
                    event = spooled.event
                    if event is None:
                        parsed = parse_json_record(spooled.data, REPARSE_MAX_BYTES)
                        # Not JSON (a source that ships other bytes): the sink keys it without a parsed event.
                        event = None if isinstance(parsed, Rejection) else parsed
                    if not forward(spooled.data, event, spooled.origin, (None, spooled.position)):
                        return  # stopping: this record and the rest stay in the spool for the next start
        except BaseException as exc:  # noqa: BLE001 - a bug here must stop the daemon loudly
            self.on_failure(exc)
