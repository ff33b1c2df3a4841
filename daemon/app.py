"""`tweet-producer run`: wires sources, buffer, sink, metrics and the embedded stack, and shuts down cleanly."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from daemon.buffer import RecordBuffer
from daemon.config import Config, dead_letter_path, sink_name, split_listen
from daemon.deadletter import DeadLetterFile
from daemon.durability import Durability
from daemon.durable import LOCAL, FileSystem
from daemon.health import Health, MetricsServer
from daemon.logs import get_logger
from daemon.notify import STATUS_INTERVAL_S, Notifier, WatchdogGate
from daemon.pipeline import COMPONENT_SINK_WORKER, FatalStop, SinkWorker, SourceContext
from daemon.progress import ProgressWindow
from daemon.spooling import SpoolFeeder
from daemon.supervisor import SourceSupervisor
from daemon.telemetry import Telemetry
from daemon.telemetry_state import FILE_DEAD_LETTER
from daemon.transforms import compile_chain
from infra.settings import StackSettings
from sinks import SINK_TYPES, SinkConfig
from sources import SOURCE_TYPES
from sources.base import Source, SourceConfig

# Sources check their stop flag at least this often (buffer waits, rate limiter); joining them is quick.
_SOURCE_STOP_TIMEOUT_S = 5.0
# How often the main thread wakes to notice that every source has finished, or that a thread died.
_MAIN_LOOP_TICK_S = 0.5

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1
# A part of the running daemon failed (dead-letter file, telemetry, a worker or supervisor thread): it
# stopped after a best-effort flush; systemd's Restart=on-failure starts it again.
EXIT_FATAL = 3


def resolve_sink_config(
    config: Config, embedded_endpoint_url: str | None, embedded_credentials: tuple[str, str] | None = None
) -> SinkConfig:
    """Fill what the sink config leaves to the stack: its stream, and the embedded endpoint (with its dummy
    credentials) when enabled."""
    sink = config.sink
    # Sinks that have these fields and left them unset get the stack's values; other sinks are untouched.
    unset = {name for name in ("stream", "endpoint_url", "region") if name in type(sink).model_fields}
    unset = {name for name in unset if getattr(sink, name) is None}
    updates: dict[str, Any] = {}
    if "stream" in unset:
        updates["stream"] = StackSettings(name=config.stack).stream_name
    if embedded_endpoint_url is not None:
        if "endpoint_url" in unset:
            updates["endpoint_url"] = embedded_endpoint_url
        if "region" in unset:
            updates["region"] = config.embedded.region
    resolved = sink.model_copy(update=updates)
    with_credentials = getattr(resolved, "with_static_credentials", None)
    to_embedded = embedded_endpoint_url is not None and getattr(resolved, "endpoint_url", None) == embedded_endpoint_url
    if to_embedded and embedded_credentials is not None and with_credentials is not None:
        resolved = with_credentials(*embedded_credentials)
    return resolved


class Daemon:
    """One run of the producer, from start to the final summary."""

    def __init__(self, config: Config, fs: FileSystem = LOCAL) -> None:
        self.config = config
        self.fs = fs  # under the durable state; tests put a power-loss layer here
        self.log = get_logger()
        self.shutdown_requested = threading.Event()
        self.stopping_sources = threading.Event()
        self.health = Health(lambda: {})  # given the telemetry's connection states once it exists

    def request_shutdown(self, signum: int, _frame: FrameType | None = None) -> None:
        if self.shutdown_requested.is_set():
            self.log.warning("shutdown_already_in_progress", signal=signal.Signals(signum).name)
            return
        self.log.info("shutdown_requested", signal=signal.Signals(signum).name)
        self.shutdown_requested.set()

    def run(self) -> int:
        with contextlib.ExitStack() as cleanup:
            try:
                parts = self._start(cleanup)
            except StartupError as exc:
                self.log.error("startup_failed", component=exc.component, error=str(exc.__cause__ or exc))
                return EXIT_STARTUP_FAILED
            return self._serve(parts)

    def _start(self, cleanup: contextlib.ExitStack) -> Running:
        """Start everything but the sources' data flow; each started part is stopped by `cleanup`."""
        config = self.config
        embedded_url = None
        embedded_credentials = None
        if config.embedded.enabled:
            EmbeddedStack = _embedded_stack_class()  # noqa: N806 - a class

            host, port = split_listen(config.embedded.listen)
            embedded = EmbeddedStack(StackSettings(name=config.stack), host, port, config.embedded.region)
            with _step("embedded stack"):
                embedded.start()
            cleanup.callback(embedded.stop)
            embedded_url = embedded.endpoint_url
            embedded_credentials = embedded.credentials

        telemetry = Telemetry(sink_name(config))
        fatal = FatalStop(telemetry, wake=self.shutdown_requested)
        self.health = Health(lambda: dict(telemetry.connections))
        if config.metrics.enabled:
            host, port = split_listen(config.metrics.listen)
            with _step(f"metrics endpoint {config.metrics.listen}"):
                metrics_server = MetricsServer(host, port, telemetry.registry, self.health)
            cleanup.callback(metrics_server.shutdown)

        sink_config = resolve_sink_config(config, embedded_url, embedded_credentials)
        with _step(f"sink {telemetry.sink}"):
            sink = SINK_TYPES[sink_config.type](sink_config, telemetry)
        cleanup.callback(sink.close)
        # Before any data flows: a wrong stream, region or credential fails start-up here, naming them.
        with _step(f"sink {telemetry.sink} check"):
            sink.check()
        durability = Durability(config, telemetry, self.fs)
        with _step(f"state directory {config.state.directory}"):
            durability.open(cleanup)
        with _step(f"dead-letter file {dead_letter_path(config)}"):
            dead_letters = DeadLetterFile(
                dead_letter_path(config), telemetry.sink, config.state.fsync, config.state.fsync_interval, self.fs,
                on_fsync=lambda: telemetry.fsynced(FILE_DEAD_LETTER),
            )  # fmt: skip
        cleanup.callback(dead_letters.close)
        durability.checkpointer.sync_first = dead_letters.sync
        buffer = RecordBuffer(config.buffer.max_records, config.buffer.max_bytes)
        with _step("sources"):
            sources = {
                source_config.name or source_config.type: SOURCE_TYPES[source_config.type](source_config)
                for source_config in config.sources
            }
        keeping = frozenset(
            name for (name, source), c in zip(sources.items(), config.sources, strict=True) if Durability.keeps(c, source)
        )
        worker = SinkWorker(sink, buffer, telemetry, dead_letters, fatal, Acknowledger(durability.windows, telemetry), keeping)
        destination = sink.destination()

        def make_context(name: str, window: ProgressWindow | None) -> SourceContext:
            transforms = config.transforms.get(name)
            chain = None if transforms is None else compile_chain(transforms, name)
            return SourceContext(
                name, buffer, telemetry, dead_letters, self.stopping_sources, sink, fatal, window, keeping, transform=chain
            )

        supervisors = []
        feeders = []
        for (name, source), source_config in zip(sources.items(), config.sources, strict=True):
            with _step(f"source {name} state"):
                durable = durability.attach(
                    name, source_config, source, destination, make_context, _source_factory(source_config), cleanup
                )
            if durable.feeder is not None:
                feeders.append(durable.feeder)
            supervisors.append(
                SourceSupervisor(
                    durable.source,
                    durable.context,
                    telemetry,
                    self.stopping_sources,
                    config.supervision.restart_initial_backoff,
                    config.supervision.restart_max_backoff,
                    fatal,
                )
            )
        self.log.info(
            "daemon_started",
            sources=[s.context.name for s in supervisors],
            sink=telemetry.sink,
            stream=getattr(sink_config, "stream", None),
            endpoint=getattr(sink_config, "endpoint_url", None) or "aws",
            metrics=f"http://{config.metrics.listen}/metrics" if config.metrics.enabled else None,
            dead_letter=str(dead_letter_path(config)),
            state=str(config.state.directory),
        )
        return Running(telemetry, fatal, worker, supervisors, feeders, durability)

    def _serve(self, running: Running) -> int:
        """Run until SIGTERM/SIGINT or a fatal error, then stop the sources, flush within the deadline, save the
        checkpoints, log the summary and return the exit code."""
        telemetry, fatal, worker, supervisors = running.telemetry, running.fatal, running.worker, running.supervisors
        self.health.attach(
            worker.thread,
            [(s.context.name, s) for s in supervisors],
            lambda: getattr(worker.sink, "unhealthy", None),
            lambda: [component for component, _ in fatal.failures],
        )
        worker.start()
        running.durability.start()
        for feeder in running.feeders:
            feeder.start()
        for supervisor in supervisors:
            supervisor.start()
        announced_idle = False
        self.health.tick()
        self.health.state = "serving"
        systemd = Notifier()
        watchdog = None
        if systemd.watchdog_interval_s is not None:
            watchdog = WatchdogGate(systemd.watchdog_interval_s, lambda: worker.heartbeat, lambda: telemetry.last_request_at)
        systemd.send("READY=1", _status(telemetry))
        status_at = time.monotonic()
        while not self.shutdown_requested.wait(_MAIN_LOOP_TICK_S):
            self.health.tick()
            now = time.monotonic()
            if watchdog is not None and watchdog.due(now):
                systemd.send("WATCHDOG=1")
            if now - status_at >= STATUS_INTERVAL_S:
                systemd.send(_status(telemetry))
                status_at = now
            watch_threads(fatal, worker, supervisors)
            if not announced_idle and all(not s.thread.is_alive() for s in supervisors):
                announced_idle = True
                self.log.info(
                    "all_sources_finished", note="still serving; stop with SIGTERM or Ctrl-C", **telemetry.ledger.totals()
                )

        started = time.monotonic()
        self.health.state = "stopping"
        systemd.send("STOPPING=1", "STATUS=stopping: delivering what is buffered, saving checkpoints")
        self.stopping_sources.set()
        stop_and_flush(
            supervisors, worker, _SOURCE_STOP_TIMEOUT_S, self.config.shutdown.flush_deadline, self.log, running.feeders
        )
        running.durability.finish()
        failed = [component for component, _ in fatal.failures]
        self.log.info(
            "shutdown_complete",
            seconds=round(time.monotonic() - started, 3),
            fatal=failed or None,
            **telemetry.ledger.totals(),
        )
        systemd.close()
        return EXIT_FATAL if failed else EXIT_OK


def _status(telemetry: Telemetry) -> str:
    """The STATUS= line `systemctl status` shows: the running totals."""
    totals = telemetry.ledger.totals()
    return "STATUS=" + ", ".join(f"{key} {value}" for key, value in totals.items() if value or key in ("received", "sent"))


@dataclass
class Running:
    """The started parts of a run, handed from start-up to serving."""

    telemetry: Telemetry
    fatal: FatalStop
    worker: SinkWorker
    supervisors: list[SourceSupervisor]
    feeders: list[SpoolFeeder]
    durability: Durability


def stop_and_flush(
    supervisors: list[SourceSupervisor],
    worker: SinkWorker,
    join_timeout_s: float,
    flush_deadline_s: float,
    log: Any,
    feeders: Sequence[SpoolFeeder] = (),
) -> None:
    """With the stop flag set: wait for each source (and spool feeder), abandon the ones that do not stop, then
    flush the buffer."""
    for supervisor in supervisors:
        if not supervisor.join(join_timeout_s):
            # Abandoned: what it hands over from now on is refused (logged, counted), and a record it is
            # putting right now ends as unsent (the buffer closes next) or, once the dead-letter file is
            # closed, as lost - never written into a closed file.
            supervisor.context.close()
            log.error("source_did_not_stop", source=supervisor.context.name, waited_s=join_timeout_s)
    for feeder in feeders:
        if not feeder.join(join_timeout_s):
            feeder.context.close()
            log.error("spool_feeder_did_not_stop", source=feeder.context.name, waited_s=join_timeout_s)
    worker.finish(flush_deadline_s)


def watch_threads(fatal: FatalStop, worker: SinkWorker, supervisors: list[SourceSupervisor]) -> None:
    """A worker or supervisor thread that ended when it should still run is a fatal error of its own."""
    if worker.thread.ident is not None and not worker.thread.is_alive() and not worker.closing:
        fatal.trigger(COMPONENT_SINK_WORKER, RuntimeError("the sink worker thread ended while the daemon runs"))
    for supervisor in supervisors:
        if supervisor.thread.ident is not None and not supervisor.thread.is_alive() and not supervisor.ended_cleanly.is_set():
            fatal.trigger(f"source supervisor {supervisor.context.name}", RuntimeError("the source's supervisor thread died"))


class Acknowledger:
    """Hands the numbers of settled records to their source's progress window (from the sink's threads)."""

    def __init__(self, windows: dict[str, ProgressWindow], telemetry: Telemetry) -> None:
        self.windows = windows
        self.telemetry = telemetry

    def __call__(self, source: str, tokens: list[Any]) -> None:
        window = self.windows.get(source)
        if window is None:
            return
        try:
            window.acknowledged(tokens)
        except Exception as exc:  # noqa: BLE001 - a bug here must not stop delivery for everyone
            self.telemetry.acknowledge_failed(source, exc, len(tokens))


def _source_factory(config: SourceConfig) -> Callable[[], Source]:
    """Makes a new source from `config` (one whose checkpoint turned out unusable starts over with it)."""
    return lambda: SOURCE_TYPES[config.type](config)


def _embedded_stack_class() -> Any:
    """The embedded stack, imported only when enabled: it is an optional extra that production installs omit."""
    with _step("embedded stack"):
        try:
            from embedded.stack import EmbeddedStack
        except ImportError as exc:
            raise ImportError(
                f"{exc}; the embedded stack needs the 'embedded' extra: pip install 'tweet-producer[embedded]' "
                "(or set embedded.enabled: false to ship to AWS)"
            ) from exc
    return EmbeddedStack


class StartupError(Exception):
    """A part of the daemon could not start; `component` names it and the cause says why."""

    def __init__(self, component: str) -> None:
        super().__init__(component)
        self.component = component


@contextlib.contextmanager
def _step(component: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise StartupError(component) from exc


def run(config: Config) -> int:
    daemon = Daemon(config)
    signal.signal(signal.SIGTERM, daemon.request_shutdown)
    signal.signal(signal.SIGINT, daemon.request_shutdown)
    return daemon.run()
