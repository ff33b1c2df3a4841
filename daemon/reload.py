"""Hot reload (SIGHUP): load the config file again and apply only what changed, on the main thread.

1. Load and validate the file; refuse a file that does not load, or one that changes what only a restart
   applies (daemon/reload_plan.py). Build every new part that can fail - the sources to start and, when `sink:`
   changed, the new sink with its check - before anything stops. A refusal leaves the running config as it was.
2. Stop the sources that are removed or changed (all of them when the sink changes); wait until what they
   handed over reached its end, so their checkpoints cover it; save and detach them.
3. A changed sink: the worker moves what is buffered into the old sink, which finishes within
   shutdown.flush_deadline, then starts the new one.
4. Start the new and changed sources (from their checkpoints or spools).

Waits run the main loop's duties meanwhile (`tick`: health, the watchdog, STATUS=), and give up when the
daemon is asked to stop; the shutdown then stops what is still running, as always.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from daemon.config import Config, load_config, sink_name
from daemon.reload_plan import ReloadPlan, plan_reload, restart_required
from daemon.source_units import WAIT_TICK_S, SourceUnit, SourceUnits
from daemon.telemetry import Telemetry
from daemon.telemetry_reload import RESULT_FAILED, RESULT_INVALID, RESULT_RESTART_REQUIRED
from daemon.yamlsource import ConfigError
from sinks import SINK_TYPES
from sinks.base import Sink, SinkConfig
from sources.base import Source

_T = TypeVar("_T")

# How often a reload waiting on settling sources says so (a sink in an outage can hold them for long).
WAITING_LOG_INTERVAL_S = 10.0


class ReloadInterrupted(Exception):
    """The daemon was asked to stop while a reload waited; the shutdown takes it from there."""

    def __init__(self, stopped: list[str] | None = None) -> None:
        super().__init__("the daemon was asked to stop during a reload")
        self.stopped = stopped or []  # sources the reload had stopped already


@dataclass
class ReloadHost:
    """What a reload works on, owned by the daemon."""

    path: Path
    telemetry: Telemetry
    units: SourceUnits
    resolve_sink: Callable[[Config], SinkConfig]  # the sink config with what the stack fills in
    tick: Callable[[], None]  # the main loop's duties, run while a reload waits
    stopping: Callable[[], bool]  # True once the daemon is asked to stop
    on_sources_changed: Callable[[], None]  # health follows the running sources


class Reloader:
    def __init__(self, host: ReloadHost, config: Config) -> None:
        self.host = host
        self.config = config  # the running config; replaced by each reload that applies

    def reload(self) -> None:
        host, events, path = self.host, self.host.telemetry.reloads, str(self.host.path)
        started_at = time.monotonic()
        try:
            new = load_config(self.host.path)
        except ConfigError as exc:
            events.failed(RESULT_INVALID, path, problems=[str(problem) for problem in exc.problems])
            return
        except Exception as exc:  # noqa: BLE001 - the loader raises ConfigError only; a bug must not stop the daemon
            events.failed(RESULT_INVALID, path, problems=[f"{path}: cannot load the config ({type(exc).__name__}: {exc})"])
            return
        problems = restart_required(self.config, new, host.path)
        if problems:
            events.failed(RESULT_RESTART_REQUIRED, path, problems=[str(problem) for problem in problems])
            return
        plan = plan_reload(self.config, new)
        try:
            prepared = self._prepare(plan, new)
        except _PrepareFailed as failed:
            events.failed(RESULT_FAILED, path, component=failed.component, error=failed.error)
            return
        except ReloadInterrupted:
            events.interrupted(path, [])
            return
        try:
            not_started = self._apply(plan, new, prepared)
        except ReloadInterrupted as interrupted:
            events.interrupted(path, interrupted.stopped)
            return
        self.config = new
        changes = {
            "started": plan.started, "stopped": plan.stopped, "restarted": plan.restarting, "unchanged": plan.staying,
            "sink_changed": plan.sink_changed,
        }  # fmt: skip
        if not_started:
            events.failed(
                RESULT_FAILED, path, note="applied, except the sources that did not start (see source_start_failed)",
                component="sources", error=f"did not start: {not_started}", **changes,
            )  # fmt: skip
            return
        events.succeeded(path, time.monotonic() - started_at, **changes)

    # --- 1. everything that can fail, before anything stops ---------------------------------------------

    def _prepare(self, plan: ReloadPlan, new: Config) -> _Prepared:
        by_name = {str(source.name): source for source in new.sources}
        sources: dict[str, Source] = {}
        for name in plan.starting:
            try:
                sources[name] = SourceUnits.build(by_name[name])
            except Exception as exc:
                raise _PrepareFailed(f"source {name}", f"{type(exc).__name__}: {exc}") from exc
        sink = None
        if plan.sink_changed:
            # Its check may wait for an unreachable endpoint's timeouts: off the main thread, whose duties go on.
            sink = self._beside_the_main_loop(lambda: self._new_sink(new))
        return _Prepared(sources, sink)

    def _beside_the_main_loop(self, work: Callable[[], _T]) -> _T:
        """`work`'s result, computed in a thread while the main loop's duties run; ReloadInterrupted on a stop."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = work()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread, which raises it
                outcome["error"] = exc

        thread = threading.Thread(target=run, name="reload-prepare", daemon=True)
        thread.start()
        while thread.is_alive():
            if self.host.stopping():
                raise ReloadInterrupted  # the thread is left to its timeouts; the daemon is stopping
            self.host.tick()
            thread.join(WAIT_TICK_S)
        if "error" in outcome:
            raise outcome["error"]
        value: _T = outcome["value"]
        return value

    def _new_sink(self, new: Config) -> Sink[Any]:
        telemetry = self.host.telemetry
        sink_config = self.host.resolve_sink(new)
        component = f"sink {sink_name(new)}"
        try:
            sink = SINK_TYPES[sink_config.type](sink_config, telemetry)
        except Exception as exc:
            raise _PrepareFailed(component, f"{type(exc).__name__}: {exc}") from exc
        try:
            sink.check()  # a wrong stream, region or credential refuses the reload here
        except Exception as exc:
            with contextlib.suppress(Exception):
                sink.close()
            raise _PrepareFailed(f"{component} check", f"{type(exc).__name__}: {exc}") from exc
        return sink

    # --- 2-4. stop, settle, hand over, start -----------------------------------------------------------

    def _apply(self, plan: ReloadPlan, new: Config, prepared: _Prepared) -> list[str]:
        host, units = self.host, self.host.units
        leaving = [units.units[name] for name in plan.leaving if name in units.units]
        units.stop(leaving, host.tick)
        old_destination = None
        try:
            if prepared.sink is not None:
                old_destination = units.worker.sink.destination()
                self._hand_over(prepared.sink, new)
            else:
                self._wait_settled(leaving)
        except ReloadInterrupted as interrupted:
            raise ReloadInterrupted([unit.name for unit in leaving]) from interrupted
        for unit in leaving:
            units.detach(unit)
        not_started = []
        by_name = {str(source.name): source for source in new.sources}
        restarting = set(plan.restarting)
        for name, source in prepared.sources.items():
            resume = old_destination if name in restarting else None
            try:
                unit = units.attach(source, by_name[name], new, resume)
            except Exception as exc:  # noqa: BLE001 - its state would not open: the others still start
                host.telemetry.log.error("source_start_failed", source=name, error=f"{type(exc).__name__}: {exc}")
                not_started.append(name)
                continue
            unit.start()
        host.on_sources_changed()
        return not_started

    def _wait_settled(self, leaving: list[SourceUnit]) -> None:
        host = self.host
        said_at = time.monotonic()
        while not host.units.settled(leaving):
            if host.stopping():
                raise ReloadInterrupted
            host.tick()
            time.sleep(WAIT_TICK_S)  # polled: acknowledgements arrive from the sink's threads, without a signal
            if time.monotonic() - said_at >= WAITING_LOG_INTERVAL_S:
                said_at = time.monotonic()
                host.telemetry.log.warning(
                    "config_reload_waiting", note="waiting for the stopped sources' records to be delivered",
                    sources=[unit.name for unit in leaving if not host.units.settled([unit])],
                )  # fmt: skip

    def _hand_over(self, sink: Sink[Any], new: Config) -> None:
        host, worker = self.host, self.host.units.worker
        swap = worker.swap_sink(sink, new.shutdown.flush_deadline)
        while not swap.done.wait(WAIT_TICK_S):
            if not worker.thread.is_alive():
                break
            host.tick()
        if swap.old is None:
            raise ReloadInterrupted  # the worker failed (fatal): the daemon is stopping
        host.telemetry.sink = sink_name(new)
        with contextlib.suppress(Exception):
            swap.old.close()


@dataclass
class _Prepared:
    sources: dict[str, Source]
    sink: Sink[Any] | None


class _PrepareFailed(Exception):
    def __init__(self, component: str, error: str) -> None:
        super().__init__(f"{component}: {error}")
        self.component = component
        self.error = error
