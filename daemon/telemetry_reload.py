"""Config reloads as operational events: each one logs and counts (`tweet_producer_config_*`)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

RESULT_SUCCESS = "success"
RESULT_INVALID = "invalid"  # the new file does not load
RESULT_RESTART_REQUIRED = "restart_required"  # it changes what only a restart applies
RESULT_FAILED = "failed"  # applying it failed before anything changed (the new sink's check, say)
RESULTS = (RESULT_SUCCESS, RESULT_INVALID, RESULT_RESTART_REQUIRED, RESULT_FAILED)


class ReloadEvents:
    def __init__(self, registry: CollectorRegistry, log: Any) -> None:
        self.log = log
        self.reloads = Counter(
            "tweet_producer_config_reloads", "Config reloads (SIGHUP), by result.", ["result"], registry=registry
        )
        for result in RESULTS:  # every result is a series from the start: rate() and alerts see the first failure
            self.reloads.labels(result=result)
        self.last_reload_at = Gauge(
            "tweet_producer_config_last_reload_timestamp_seconds",
            "Unix time of the last reload attempt (0: none yet).",
            registry=registry,
        )
        self.last_reload_successful = Gauge(
            "tweet_producer_config_last_reload_successful",
            "1 when the running config is the file's latest (start-up or the last reload succeeded), 0 after a refused reload.",
            registry=registry,
        )
        self.last_reload_successful.set(1)

    def requested(self, trigger: str, path: str) -> None:
        """`trigger`: the signal's name (SIGHUP), or `file_changed` (reload.watch)."""
        signal = trigger if trigger.startswith("SIG") else None
        self.log.info("config_reload_requested", trigger=trigger, signal=signal, path=path)

    def succeeded(self, path: str, seconds: float, **changes: Any) -> None:
        self._count(RESULT_SUCCESS)
        self.log.info("config_reloaded", result=RESULT_SUCCESS, path=path, seconds=round(seconds, 3), **changes)

    def failed(self, result: str, path: str, note: str = "the running config is unchanged", **why: Any) -> None:
        self._count(result)
        self.log.error("config_reload_failed", result=result, path=path, note=note, **why)

    def interrupted(self, path: str, stopped_sources: list[str]) -> None:
        """The daemon was asked to stop during a reload: not a result (the process ends), only said."""
        self.log.warning(
            "config_reload_interrupted", path=path, stopped=stopped_sources,
            note="the daemon is stopping; the shutdown saves what the stopped sources delivered",
        )  # fmt: skip

    def _count(self, result: str) -> None:
        self.reloads.labels(result=result).inc()
        self.last_reload_at.set(time.time())
        self.last_reload_successful.set(1 if result == RESULT_SUCCESS else 0)
