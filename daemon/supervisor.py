"""Runs each source in its own thread and restarts it with backoff when it crashes.

Defence in depth: a source that crashes twice in a row at the same input position (see `Source.position`)
has that input dead-lettered (reason `source_crash`, the exception as detail) and is restarted after it at
once, so no single input can stop a source and a crash loop on one input cannot happen. Sources without
positions are restarted with backoff only.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Hashable

from daemon.pipeline import FatalStop, SourceContext
from daemon.spooling import SpoolingContext
from daemon.telemetry import Telemetry
from sources.base import SkippedInput, Source

# A source that ran this long before crashing was healthy: its next restart starts from the first delay.
HEALTHY_RUN_S = 60.0
REASON_SOURCE_CRASH = "source_crash"


class SourceSupervisor:
    """One thread per source; a crash is logged and counted, then the source runs again after a delay."""

    def __init__(
        self,
        source: Source,
        context: SourceContext | SpoolingContext,
        telemetry: Telemetry,
        stopping: threading.Event,
        initial_backoff_s: float,
        max_backoff_s: float,
        fatal: FatalStop | None = None,
    ) -> None:
        self.source = source
        self.context = context
        self.telemetry = telemetry
        self.stopping = stopping
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.fatal = fatal or FatalStop(telemetry)
        # Set when the thread ends as designed (source finished, or stopping); a thread that ended without
        # it died of a bug in the supervisor itself, which the daemon treats as fatal.
        self.ended_cleanly = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"source-{context.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        try:
            self._supervise()
        except BaseException as exc:  # noqa: BLE001 - the supervisor itself failed: stop the daemon loudly
            self.fatal.trigger(f"source supervisor {self.context.name}", exc)
            return
        self.ended_cleanly.set()

    def _supervise(self) -> None:
        backoff = self.initial_backoff_s
        attempt = 0
        last_crash_at: Hashable | None = None
        while not self.stopping.is_set():
            attempt += 1
            started = time.monotonic()
            self.telemetry.source_started(self.context.name, attempt)
            try:
                self.source.run(self.context)
            except Exception as exc:  # noqa: BLE001 - a source's crash must never take the daemon down
                position = self._position()
                # Twice at one position is the input, not bad luck: step over it and go on at once.
                if position is not None and position == last_crash_at:
                    skipped = self._skip(position)
                    if skipped is not None:
                        self.telemetry.source_crashed(self.context.name, exc, 0.0, position=skipped.origin, skipped=True)
                        detail = f"{type(exc).__name__}: {exc}"
                        self.context.reject(skipped.data, skipped.origin, REASON_SOURCE_CRASH, detail, skipped.token)
                        last_crash_at = None
                        continue
                last_crash_at = position
                if time.monotonic() - started >= HEALTHY_RUN_S:
                    backoff = self.initial_backoff_s
                delay = backoff * random.uniform(0.5, 1.0)  # jitter: sources failing together restart apart
                self.telemetry.source_crashed(self.context.name, exc, delay, position=_describe(position))
                if self.stopping.wait(delay):
                    break
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            self.telemetry.source_finished(self.context.name)
            break

    def _position(self) -> Hashable | None:
        try:
            return self.source.position()
        except Exception as exc:  # noqa: BLE001 - a source that cannot say where it is just gets backoff
            self.telemetry.log.warning("source_position_failed", source=self.context.name, error=repr(exc))
            return None

    def _skip(self, position: Hashable) -> SkippedInput | None:
        """The skipped input, or None when the source could not step over it (then: backoff)."""
        try:
            skipped = self.source.skip(position)
        except Exception as exc:  # noqa: BLE001 - see _position
            self.telemetry.log.warning("source_skip_failed", source=self.context.name, error=repr(exc))
            return None
        if skipped is not None and self._position() == position:
            # A skip that did not move the source on would crash at the same input forever: fall back
            # to backoff restarts instead of a tight loop.
            self.telemetry.log.error("source_skip_did_not_advance", source=self.context.name, position=repr(position))
            return None
        return skipped


def _describe(position: Hashable | None) -> str | None:
    return None if position is None else repr(position)
