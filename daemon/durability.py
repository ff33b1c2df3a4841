"""Wires the durable state into a run: the state directory, each source's checkpoint or spool, the
checkpoint thread, and the accounting of what is left for the next start.

A replayable source (file, jetstream) with `checkpoint: true` resumes from its saved checkpoint and numbers
its records in a progress window; a live source with `spool.enabled` appends to its spool, whose feeder
numbers them instead. Either way the checkpoint thread saves the acknowledged prefix, and records of these
sources that are unsent at shutdown are counted as kept (read again at the next start), not dead-lettered.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from daemon.checkpointing import Checkpointer
from daemon.checkpoints import CheckpointStore
from daemon.config import Config
from daemon.durable import LOCAL, FileSystem
from daemon.pipeline import SourceContext
from daemon.progress import ProgressWindow
from daemon.spool import Spool
from daemon.spooling import SpoolFeeder, SpoolingContext
from daemon.statedir import StateDirectory
from daemon.telemetry import Telemetry
from daemon.telemetry_state import SpoolEventsFor, SpoolReading
from sources.base import CheckpointUnusable, Source, SourceConfig, SpoolSettings

# Builds a source's context with the progress window it numbers records in (None: no checkpoint).
ContextFactory = Callable[[str, ProgressWindow | None], SourceContext]


@dataclass
class DurableSource:
    """One source as the daemon runs it: what it emits into, and the feeder of its spool (if it has one)."""

    name: str
    source: Source
    context: SourceContext | SpoolingContext
    feeder: SpoolFeeder | None = None


def spool_settings(config: SourceConfig) -> SpoolSettings | None:
    """The source's spool settings when its spool is enabled."""
    settings = getattr(config, "spool", None)
    return settings if isinstance(settings, SpoolSettings) and settings.enabled else None


class Durability:
    """The run's durable parts; `open` first, then `attach` each source, `start`, and at shutdown `finish`."""

    def __init__(self, config: Config, telemetry: Telemetry, fs: FileSystem = LOCAL) -> None:
        self.config = config
        self.telemetry = telemetry
        self.fs = fs
        self.directory = StateDirectory(config.state.directory, fs)
        self.store: CheckpointStore | None = None
        self.checkpointer = Checkpointer(telemetry, config.state.checkpoint_interval)
        self.windows: dict[str, ProgressWindow] = {}
        self.spooled: list[str] = []

    def open(self, cleanup: contextlib.ExitStack) -> None:
        """Open (create, probe, lock) the state directory; raises StateDirectoryError saying what is wrong."""
        self.directory.open()
        cleanup.callback(self.directory.close)
        self.store = CheckpointStore(self.directory.checkpoints, self.telemetry, self.fs)

    @staticmethod
    def keeps(config: SourceConfig, source: Source) -> bool:
        """Whether `source`'s unsent records are left for the next start (it has a spool or a checkpoint)."""
        return spool_settings(config) is not None or source.checkpoints()

    def attach(
        self,
        name: str,
        config: SourceConfig,
        source: Source,
        destination: str | None,
        make_context: ContextFactory,
        make_source: Callable[[], Source],
        cleanup: contextlib.ExitStack,
        resume_destination: str | None = None,
    ) -> DurableSource:
        """Give `source` its spool or its checkpoint (resumed) and the context it runs with.

        `resume_destination`: the destination the checkpoint to resume was written for, when a reload moved
        the sink while this source ran (what reached the old stream is not sent to the new one again)."""
        settings = spool_settings(config)
        if settings is not None:
            return self._spooled(name, source, settings, make_context, cleanup)
        if not source.checkpoints():
            return DurableSource(name, source, make_context(name, None))
        assert self.store is not None, "open() first"
        saved = self.store.load(name, config.type, destination if resume_destination is None else resume_destination)
        if saved is not None:
            try:
                source.resume(saved)
            except CheckpointUnusable as exc:
                self.store.set_aside(name, str(exc))
                source = make_source()  # resume may have changed it halfway: start over with a new one
        window = self.windows[name] = ProgressWindow()
        self.checkpointer.track_source(name, source, window, self.store, destination)
        return DurableSource(name, source, make_context(name, window))

    def _spooled(
        self, name: str, source: Source, settings: SpoolSettings, make_context: ContextFactory, cleanup: contextlib.ExitStack
    ) -> DurableSource:
        state = self.config.state
        spool = Spool(
            self.directory.spool(name), settings, state.fsync, state.fsync_interval, SpoolEventsFor(self.telemetry, name), self.fs
        )
        recovered = spool.open()
        cleanup.callback(spool.close)
        window = self.windows[name] = ProgressWindow()
        inner = make_context(name, window)
        if recovered:
            # Left by an earlier run: they enter this run's accounting now, and are sent before new ones.
            inner.count_received(recovered)
            self.telemetry.spool_replayed.labels(source=name).inc(recovered)
        self.checkpointer.track_spool(name, spool, window)

        def level() -> SpoolReading:
            stats = spool.stats()
            return SpoolReading(stats.records, stats.disk_bytes, stats.oldest_age_s)

        self.telemetry.durability.watch_spool(name, level)
        self.spooled.append(name)
        feeder = SpoolFeeder(inner, spool, inner.stopping_event, lambda exc: inner.fatal.trigger(f"spool feeder {name}", exc))
        return DurableSource(name, source, SpoolingContext(inner, spool, inner.give_up_event), feeder)

    def start(self) -> None:
        self.checkpointer.start()

    def detach(self, name: str) -> None:
        """`name` stopped for good in this run (a reload removed or replaced it): its checkpoint or spool commit is
        saved a last time, and what its spool still holds is counted as kept. Its spool is closed by the caller."""
        self.checkpointer.untrack(name)
        self.windows.pop(name, None)
        if name in self.spooled:
            self.spooled.remove(name)
            self._count_kept([name])

    def _count_kept(self, names: list[str]) -> None:
        ledger = self.telemetry.ledger
        received = ledger.received
        left: Counter[str] = Counter()
        with ledger.lock:
            for name in names:
                ended = ledger.ended(name)
                if received[name] > ended:
                    left[name] = received[name] - ended
        if left:
            self.telemetry.records_kept(left)

    def finish(self) -> None:
        """After the last record was settled: count what stays in the spools as kept, save every checkpoint."""
        self._count_kept(self.spooled)
        self.checkpointer.stop()
