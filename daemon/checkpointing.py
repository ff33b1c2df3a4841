"""The checkpoint thread: every `state.checkpoint_interval` (and once more at shutdown) each source's
acknowledged prefix is made durable - a replayable source's checkpoint is saved, a spool is committed (its
files behind the commit are deleted). A save that fails is reported and tried again at the next interval:
delivery goes on, only a restart would re-read more.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.deadletter import DeadLetterUnavailable
from daemon.progress import ProgressWindow
from daemon.telemetry import Telemetry
from daemon.telemetry_state import LagReading
from sources.base import Source


class CheckpointSaver(Protocol):
    """What the daemon uses of daemon/checkpoints.py `CheckpointStore`."""

    def save(self, source: str, source_type: str, destination: str | None, state: dict[str, Any]) -> None: ...


class Committer(Protocol):
    """What the daemon uses of daemon/spool.py `Spool`."""

    def commit(self, position: Any) -> None: ...


@dataclass
class _Tracked:
    """One source's durable progress: the window it is numbered in, and how far its last save got."""

    name: str
    window: ProgressWindow
    save: Callable[[dict[Hashable, Any]], None]
    saved: dict[Hashable, Any] | None = None  # the committed map at the last successful save
    saved_records: int = 0  # window.committed_records at that save
    saved_at: float = field(default_factory=time.monotonic)
    reports: bool = True  # False: `save` reports its own outcome (the checkpoint store does)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def lag(self) -> LagReading:
        """Records the saved state does not cover (re-read after a crash), and the oldest one's age."""
        pending, oldest_age = self.window.lag()
        unsaved = self.window.committed_records - self.saved_records
        age = oldest_age
        if unsaved > 0:
            age = max(age, time.monotonic() - self.saved_at)
        return LagReading(pending + unsaved, age)


class Checkpointer:
    """Saves every tracked source's progress at an interval, from its own thread, and at `stop`."""

    def __init__(self, telemetry: Telemetry, interval_s: float) -> None:
        self.telemetry = telemetry
        self.interval_s = interval_s
        self._tracked: list[_Tracked] = []
        # Run before each round: the dead-letter file's fsync, which acknowledges the inputs rejected since.
        self.sync_first: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)

    def track_source(
        self, name: str, source: Source, window: ProgressWindow, store: CheckpointSaver, destination: str | None
    ) -> None:
        source_type = source.config.type

        def save(committed: dict[Hashable, Any]) -> None:
            store.save(name, source_type, destination, source.checkpoint_state(committed))

        self._add(_Tracked(name, window, save, reports=False))

    def track_spool(self, name: str, spool: Committer, window: ProgressWindow) -> None:
        def save(committed: dict[Hashable, Any]) -> None:
            if None in committed:
                spool.commit(committed[None])

        self._add(_Tracked(name, window, save))

    def _add(self, tracked: _Tracked) -> None:
        # Copied, not appended to: the thread iterates the list it read while a reload changes it.
        self._tracked = [*self._tracked, tracked]
        self.telemetry.durability.watch_lag(tracked.name, tracked.lag)

    def untrack(self, name: str) -> None:
        """Save `name`'s progress a last time and stop tracking it (its source stopped and was settled)."""
        leaving = [tracked for tracked in self._tracked if tracked.name == name]
        self._tracked = [tracked for tracked in self._tracked if tracked.name != name]
        self.telemetry.durability.forget(name)
        if self.sync_first is not None:
            with contextlib.suppress(DeadLetterUnavailable):
                self.sync_first()
        for tracked in leaving:
            self._save(tracked)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and save once more (after the last records were settled)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        self.save_all()

    def save_all(self) -> None:
        if self.sync_first is not None:
            # A broken dead-letter file is fatal at its next write; what it holds unsynced stays unacknowledged,
            # so no checkpoint passes it.
            with contextlib.suppress(DeadLetterUnavailable):
                self.sync_first()
        for tracked in self._tracked:
            self._save(tracked)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.save_all()

    def _save(self, tracked: _Tracked) -> None:
        with tracked.lock:  # the thread's last round and stop's may overlap
            records = tracked.window.committed_records
            committed = tracked.window.committed()
            if committed == tracked.saved:
                return
            started = time.monotonic()
            try:
                tracked.save(committed)
            except Exception as exc:  # noqa: BLE001 - a failed save is reported; the next interval tries again
                if tracked.reports:
                    self.telemetry.checkpoint_write_failed(tracked.name, exc)
                return
            tracked.saved, tracked.saved_records, tracked.saved_at = committed, records, time.monotonic()
            if tracked.reports:
                self.telemetry.checkpoint_saved(tracked.name, time.monotonic() - started)
