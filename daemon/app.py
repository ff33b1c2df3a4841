"""`tweet-producer run`: wires sources, buffer, sink, metrics and the embedded stack, and shuts down cleanly."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from daemon.buffer import RecordBuffer
from daemon.config import DEFAULT_CONFIG_PATH, Config, dead_letter_path, sink_name, split_listen
from daemon.deadletter import DeadLetterFile
from daemon.durability import Durability
from daemon.durable import LOCAL, FileSystem
from daemon.health import Health, MetricsServer
from daemon.logs import get_logger
from daemon.notify import STATUS_INTERVAL_S, Notifier, WatchdogGate
from daemon.pipeline import COMPONENT_SINK_WORKER, FatalStop, SinkWorker
from daemon.progress import ProgressWindow
from daemon.reload import Reloader, ReloadHost
from daemon.reload_watch import ConfigWatch
from daemon.source_units import SOURCE_STOP_TIMEOUT_S, SourceUnits, join_or_abandon
from daemon.spooling import SpoolFeeder
from daemon.supervisor import SourceSupervisor
from daemon.telemetry import Telemetry
from daemon.telemetry_state import FILE_DEAD_LETTER
from infra.settings import StackSettings
from sinks import SINK_TYPES, SinkConfig

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

    def __init__(self, config: Config, fs: FileSystem = LOCAL, config_path: Path = DEFAULT_CONFIG_PATH) -> None:
        self.config = config
        self.config_path = config_path  # read again on SIGHUP
        self.fs = fs  # under the durable state; tests put a power-loss layer here
        self.log = get_logger()
        self.shutdown_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.health = Health(lambda: {})  # given the telemetry's connection states once it exists

    def request_shutdown(self, signum: int, _frame: FrameType | None = None) -> None:
        if self.shutdown_requested.is_set():
            self.log.warning("shutdown_already_in_progress", signal=signal.Signals(signum).name)
            return
        self.log.info("shutdown_requested", signal=signal.Signals(signum).name)
        self.shutdown_requested.set()

    def request_reload(self, signum: int, _frame: FrameType | None = None) -> None:
        """SIGHUP: the main loop reloads the config at its next turn (a reload under way is followed by one more)."""
        self.reload_requested.set()  # logged by the main loop: a signal handler interrupts whatever was writing

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

        def resolve_sink(c: Config) -> SinkConfig:
            return resolve_sink_config(c, embedded_url, embedded_credentials)

        sink_config = resolve_sink(config)
        with _step(f"sink {telemetry.sink}"):
            sink = SINK_TYPES[sink_config.type](sink_config, telemetry)
        # Whichever sink is current at exit: a reload may have replaced (and closed) this one.
        workers: list[SinkWorker] = []
        cleanup.callback(lambda: (workers[0].sink if workers else sink).close())
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
        keeping: set[str] = set()
        worker = SinkWorker(sink, buffer, telemetry, dead_letters, fatal, Acknowledger(durability.windows, telemetry), keeping)
        workers.append(worker)
        units = SourceUnits(durability, buffer, telemetry, dead_letters, fatal, worker, keeping, self.log)
        cleanup.callback(units.close_all)  # the spools, before the dead-letter file and the state directory
        with _step("sources"):
            sources = [(source_config, SourceUnits.build(source_config)) for source_config in config.sources]
        for source_config, source in sources:
            with _step(f"source {source_config.name} state"):
                units.attach(source, source_config, config)
        self.log.info(
            "daemon_started",
            sources=list(units.units),
            sink=telemetry.sink,
            stream=getattr(sink_config, "stream", None),
            endpoint=getattr(sink_config, "endpoint_url", None) or "aws",
            metrics=f"http://{config.metrics.listen}/metrics" if config.metrics.enabled else None,
            dead_letter=str(dead_letter_path(config)),
            state=str(config.state.directory),
        )
        return Running(telemetry, fatal, worker, units, durability, resolve_sink)

    def _serve(self, running: Running) -> int:
        """Run until SIGTERM/SIGINT or a fatal error, reloading on SIGHUP, then stop the sources, flush within the
        deadline, save the checkpoints, log the summary and return the exit code."""
        telemetry, fatal, worker, units = running.telemetry, running.fatal, running.worker, running.units
        self.health.attach(
            worker.thread,
            [(name, unit.supervisor) for name, unit in units.units.items()],
            lambda: getattr(worker.sink, "unhealthy", None),
            lambda: [component for component, _ in fatal.failures],
        )
        worker.start()
        running.durability.start()
        for unit in units.units.values():
            unit.start()
        self.health.tick()
        self.health.state = "serving"
        systemd = Notifier()
        loop = _MainLoop(self, running, systemd)
        reloader = Reloader(
            ReloadHost(
                self.config_path, telemetry, units, running.resolve_sink, loop.tick, self.shutdown_requested.is_set,
                lambda: self.health.set_sources([(name, unit.supervisor) for name, unit in units.units.items()]),
            ),
            self.config,
        )  # fmt: skip
        systemd.send("READY=1", _status(telemetry))
        watch = _watch(self.config, self.config_path, None)
        while not self.shutdown_requested.wait(_MAIN_LOOP_TICK_S):
            loop.tick()
            trigger = None
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                trigger = "SIGHUP"
            elif watch is not None and watch.due(time.monotonic()):
                trigger = "file_changed"
            if trigger is None:
                continue
            telemetry.reloads.requested(trigger, str(self.config_path))
            systemd.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", "STATUS=reloading the config")
            self.health.state = "reloading"
            if watch is not None:
                watch.loaded()
            reloader.reload()
            self.config = reloader.config
            watch = _watch(self.config, self.config_path, watch)
            self.health.state = "serving"
            systemd.send("READY=1", _status(telemetry))

        started = time.monotonic()
        self.health.state = "stopping"
        systemd.send("STOPPING=1", "STATUS=stopping: delivering what is buffered, saving checkpoints")
        supervisors = units.supervisors()
        for unit in units.units.values():
            unit.stop_now()
        stop_and_flush(
            supervisors, worker, SOURCE_STOP_TIMEOUT_S, self.config.shutdown.flush_deadline, self.log,
            [unit.durable.feeder for unit in units.units.values() if unit.durable.feeder is not None],
        )  # fmt: skip
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


class _MainLoop:
    """The main loop's duties at each turn (also run while a reload waits): health, the watchdog, STATUS=, and
    noticing dead threads and finished sources."""

    def __init__(self, daemon: Daemon, running: Running, systemd: Notifier) -> None:
        self.daemon = daemon
        self.running = running
        self.systemd = systemd
        worker, telemetry = running.worker, running.telemetry
        self.watchdog = None
        if systemd.watchdog_interval_s is not None:
            self.watchdog = WatchdogGate(systemd.watchdog_interval_s, lambda: worker.heartbeat, lambda: telemetry.last_request_at)
        self.status_at = time.monotonic()
        self.announced_idle = False

    def tick(self) -> None:
        running, daemon = self.running, self.daemon
        daemon.health.tick()
        now = time.monotonic()
        if self.watchdog is not None and self.watchdog.due(now):
            self.systemd.send("WATCHDOG=1")
        if now - self.status_at >= STATUS_INTERVAL_S:
            self.systemd.send(_status(running.telemetry))
            self.status_at = now
        supervisors = running.units.supervisors()
        watch_threads(running.fatal, running.worker, supervisors)
        finished = all(not s.thread.is_alive() for s in supervisors)
        if finished and not self.announced_idle and daemon.health.state == "serving":
            self.announced_idle = True
            daemon.log.info(
                "all_sources_finished", note="still serving; stop with SIGTERM or Ctrl-C", **running.telemetry.ledger.totals()
            )
        elif not finished:
            self.announced_idle = False  # a reload started sources again


def _watch(config: Config, path: Path, current: ConfigWatch | None) -> ConfigWatch | None:
    """The file watch the config asks for (`reload.watch`), keeping the running one when its settings held."""
    settings = config.reload
    if not settings.watch:
        return None
    if current is not None and current.interval_s == settings.watch_interval:
        return current
    return ConfigWatch(path, settings.watch_interval, time.monotonic())


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
    units: SourceUnits
    durability: Durability
    resolve_sink: Callable[[Config], SinkConfig]  # a config's sink with what the stack fills in (for reloads)


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
        # An abandoned source's record being put right now ends as unsent (the buffer closes next) or, once the
        # dead-letter file is closed, as lost - never written into a closed file.
        join_or_abandon(supervisor.thread, supervisor.context, "source_did_not_stop", log, timeout_s=join_timeout_s)
    for feeder in feeders:
        join_or_abandon(feeder.thread, feeder.context, "spool_feeder_did_not_stop", log, timeout_s=join_timeout_s)
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


def run(config: Config, config_path: Path = DEFAULT_CONFIG_PATH) -> int:
    daemon = Daemon(config, config_path=config_path)
    signal.signal(signal.SIGTERM, daemon.request_shutdown)
    signal.signal(signal.SIGINT, daemon.request_shutdown)
    signal.signal(signal.SIGHUP, daemon.request_reload)
    return daemon.run()
