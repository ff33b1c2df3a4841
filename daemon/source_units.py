"""The running sources, one unit each: the source, its context (and spool feeder), its supervisor thread and its
own stop flag - so that a reload can stop, settle and replace one source while the others keep running.

A unit stops in three steps: its stop flag is set and its threads are joined; its in-flight records are
settled (every record it handed over reached its end, so its checkpoint covers them); then it is detached - its
checkpoint or spool commit saved a last time and its spool closed. Only then may a new source of the same name
resume from that checkpoint without reading a record twice.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from daemon.buffer import RecordBuffer
from daemon.config import Config
from daemon.deadletter import DeadLetterFile
from daemon.durability import Durability, DurableSource
from daemon.pipeline import FatalStop, SinkWorker, SourceContext
from daemon.progress import ProgressWindow
from daemon.supervisor import SourceSupervisor
from daemon.telemetry import Telemetry
from daemon.transforms import compile_chain
from sources import SOURCE_TYPES
from sources.base import Source, SourceConfig

# Sources check their stop flag at least this often (buffer waits, rate limiter); joining them is quick.
SOURCE_STOP_TIMEOUT_S = 5.0
# How often a wait on stopping or settling units lets the main loop's duties run (health, watchdog).
WAIT_TICK_S = 0.1


@dataclass
class SourceUnit:
    name: str
    config: SourceConfig
    stop: threading.Event  # the source (and its spool feeder) should stop
    give_up: threading.Event  # a record waiting for room in a full buffer or spool is given up (unsent or kept)
    durable: DurableSource
    supervisor: SourceSupervisor
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # closes its spool
    # Its records counted unsent or kept when the reload that stops it began: those given up at the stop never
    # reach the sink, so settling waits for the rest only.
    given_up_before: int = 0

    def stop_now(self) -> None:
        """Shutdown: stop, and give up at once on a record waiting for room."""
        self.stop.set()
        self.give_up.set()

    @property
    def context(self) -> Any:
        return self.durable.context

    def start(self) -> None:
        if self.durable.feeder is not None:
            self.durable.feeder.start()
        self.supervisor.start()


class SourceUnits:
    """Builds, starts and stops units; `units` holds the ones of the running config, by name."""

    def __init__(
        self,
        durability: Durability,
        buffer: RecordBuffer,
        telemetry: Telemetry,
        dead_letters: DeadLetterFile,
        fatal: FatalStop,
        worker: SinkWorker,
        keeping: set[str],
        log: Any,
    ) -> None:
        self.durability = durability
        self.buffer = buffer
        self.telemetry = telemetry
        self.dead_letters = dead_letters
        self.fatal = fatal
        self.worker = worker
        self.keeping = keeping  # shared with the outcomes: whose unsent records the next start reads again
        self.log = log
        self.units: dict[str, SourceUnit] = {}

    @staticmethod
    def build(config: SourceConfig) -> Source:
        return SOURCE_TYPES[config.type](config)

    def attach(
        self, source: Source, source_config: SourceConfig, config: Config, resume_destination: str | None = None
    ) -> SourceUnit:
        """A unit for `source` (built from `source_config`), resumed from its checkpoint or spool, not started."""
        name = str(source_config.name)
        stop, give_up = threading.Event(), threading.Event()
        if Durability.keeps(source_config, source):
            self.keeping.add(name)
        sink = self.worker.sink
        transforms = config.transforms.get(name)
        chain = None if transforms is None else compile_chain(transforms, name)  # once per unit, not per record

        def make_context(context_name: str, window: ProgressWindow | None) -> SourceContext:
            return SourceContext(
                context_name, self.buffer, self.telemetry, self.dead_letters, stop, sink, self.fatal, window, self.keeping,
                give_up=give_up, transform=chain,
            )  # fmt: skip

        cleanup = contextlib.ExitStack()
        try:
            durable = self.durability.attach(
                name, source_config, source, sink.destination(), make_context, lambda: self.build(source_config), cleanup,
                resume_destination,
            )  # fmt: skip
        except BaseException:
            cleanup.close()
            raise
        supervision = config.supervision
        supervisor = SourceSupervisor(
            durable.source, durable.context, self.telemetry, stop,
            supervision.restart_initial_backoff, supervision.restart_max_backoff, self.fatal,
        )  # fmt: skip
        unit = SourceUnit(name, source_config, stop, give_up, durable, supervisor, cleanup)
        self.units[name] = unit
        return unit

    def stop(self, units: Iterable[SourceUnit], tick: Callable[[], None]) -> None:
        """Set their stop flags and wait for their threads; one that does not stop in time is abandoned (what it
        hands over from then on is refused, logged and counted)."""
        units = list(units)
        for unit in units:
            unit.given_up_before = self._given_up(unit.name)
            unit.stop.set()
        for unit in units:
            join_or_abandon(unit.supervisor.thread, unit.context, "source_did_not_stop", self.log, tick)
            if unit.durable.feeder is not None:
                join_or_abandon(unit.durable.feeder.thread, unit.context, "spool_feeder_did_not_stop", self.log, tick)

    def settled(self, units: Iterable[SourceUnit]) -> bool:
        """Whether every record the stopped units handed over reached its end - but those given up at the stop."""
        for unit in units:
            window = self.durability.windows.get(unit.name)
            if window is None:
                continue
            pending, _ = window.lag()
            if pending > self._given_up(unit.name) - unit.given_up_before:
                return False
        return True

    def _given_up(self, name: str) -> int:
        ledger = self.telemetry.ledger
        with ledger.lock:
            return ledger.unsent[name] + ledger.kept[name]

    def detach(self, unit: SourceUnit) -> None:
        """The unit stopped and settled: save its progress a last time, close its spool, forget it."""
        self.durability.detach(unit.name)
        unit.cleanup.close()
        self.telemetry.source_removed(unit.name)
        if self.units.get(unit.name) is unit:
            del self.units[unit.name]

    def close_all(self) -> None:
        """At exit: close every unit's spool (after the last checkpoint was saved)."""
        for unit in list(self.units.values()):
            unit.cleanup.close()

    def supervisors(self) -> list[SourceSupervisor]:
        return [unit.supervisor for unit in self.units.values()]


def join_or_abandon(
    thread: threading.Thread,
    context: Any,
    event: str,
    log: Any,
    tick: Callable[[], None] | None = None,
    timeout_s: float = SOURCE_STOP_TIMEOUT_S,
) -> bool:
    """Wait up to `timeout_s` for a stopping source's (or spool feeder's) thread, running `tick` meanwhile. One that
    does not end is abandoned: its context is closed - what it hands over from then on is refused (logged,
    counted), and a record it is putting right now ends as unsent or kept - and `event` is logged."""
    if _join(thread, timeout_s, tick):
        return True
    context.close()
    log.error(event, source=context.name, waited_s=timeout_s)
    return False


def _join(thread: threading.Thread, timeout_s: float, tick: Callable[[], None] | None) -> bool:
    """Join `thread` for up to `timeout_s`, running `tick` meanwhile; True when it ended (or never started)."""
    if thread.ident is None:
        return True
    if tick is None:
        thread.join(timeout_s)
        return not thread.is_alive()
    waited = 0.0
    while waited < timeout_s:
        thread.join(WAIT_TICK_S)
        if not thread.is_alive():
            return True
        waited += WAIT_TICK_S
        tick()
    return not thread.is_alive()
