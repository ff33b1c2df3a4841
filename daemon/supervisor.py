"""Runs each source in its own thread and restarts it with backoff when it crashes."""

from __future__ import annotations

import random
import threading
import time

from daemon.pipeline import SourceContext
from daemon.telemetry import Telemetry
from sources.base import Source

# A source that ran this long before crashing was healthy: its next restart starts from the first delay.
HEALTHY_RUN_S = 60.0


class SourceSupervisor:
    """One thread per source; a crash is logged and counted, then the source runs again after a delay."""

    def __init__(
        self,
        source: Source,
        context: SourceContext,
        telemetry: Telemetry,
        stopping: threading.Event,
        initial_backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        self.source = source
        self.context = context
        self.telemetry = telemetry
        self.stopping = stopping
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.thread = threading.Thread(target=self._run, name=f"source-{context.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        backoff = self.initial_backoff_s
        attempt = 0
        while not self.stopping.is_set():
            attempt += 1
            started = time.monotonic()
            self.telemetry.source_started(self.context.name, attempt)
            try:
                self.source.run(self.context)
            except Exception as exc:  # noqa: BLE001 - a source's crash must never take the daemon down
                if time.monotonic() - started >= HEALTHY_RUN_S:
                    backoff = self.initial_backoff_s
                delay = backoff * random.uniform(0.5, 1.0)  # jitter: sources failing together restart apart
                self.telemetry.source_crashed(self.context.name, exc, delay)
                if self.stopping.wait(delay):
                    return
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            self.telemetry.source_finished(self.context.name)
            return
