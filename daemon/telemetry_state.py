"""The durable state's events (checkpoints, spools, fsyncs, records kept for the next start): log and count.

A mixin of `Telemetry`: its metrics live in the same registry. Lags and spool levels are read at scrape time
from the parts that know them (`DurabilityCollector`), so the record path pays nothing for them.
"""

from __future__ import annotations

import threading
from collections import Counter as _Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from daemon.logs import RateLimitedLog

# A full disk or a broken spool reports on every retry; one line per source and kind this often.
_REPEATED_STATE_LOG_INTERVAL_S = 10.0
FILE_SPOOL = "spool"
FILE_DEAD_LETTER = "dead_letter"
FILE_CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class LagReading:
    """One source's distance from its saved checkpoint (or spool commit), as a scrape sees it."""

    records: int
    seconds: float


@dataclass(frozen=True)
class SpoolReading:
    records: int
    bytes: int
    oldest_age_s: float


class DurabilityCollector:
    """`tweet_producer_checkpoint_lag_*` and `tweet_producer_spool_*` gauges, read from registered readers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lags: dict[str, Callable[[], LagReading]] = {}
        self._spools: dict[str, Callable[[], SpoolReading]] = {}

    def watch_lag(self, source: str, read: Callable[[], LagReading]) -> None:
        with self._lock:
            self._lags[source] = read

    def watch_spool(self, source: str, read: Callable[[], SpoolReading]) -> None:
        with self._lock:
            self._spools[source] = read

    def forget(self, source: str) -> None:
        """A source stopped for good (a reload removed or replaced it): its series end here."""
        with self._lock:
            self._lags.pop(source, None)
            self._spools.pop(source, None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            lags, spools = list(self._lags.items()), list(self._spools.items())
        lag_records = GaugeMetricFamily(
            "tweet_producer_checkpoint_lag_records",
            "Records handed over that the saved checkpoint (or spool commit) does not cover yet: re-read after a crash.",
            labels=["source"],
        )
        lag_seconds = GaugeMetricFamily(
            "tweet_producer_checkpoint_lag_seconds",
            "Age of the oldest record the saved checkpoint (or spool commit) does not cover yet.",
            labels=["source"],
        )
        for source, read_lag in lags:
            lag = read_lag()
            lag_records.add_metric([source], lag.records)
            lag_seconds.add_metric([source], lag.seconds)
        spool_records = GaugeMetricFamily("tweet_producer_spool_records", "Records in the spool not yet done.", labels=["source"])
        spool_bytes = GaugeMetricFamily(
            "tweet_producer_spool_bytes", "Disk the spool's files use (what spool.max_bytes bounds).", labels=["source"]
        )
        spool_age = GaugeMetricFamily(
            "tweet_producer_spool_oldest_record_age_seconds",
            "Age of the oldest record in the spool not yet done.",
            labels=["source"],
        )
        for source, read_spool in spools:
            level = read_spool()
            spool_records.add_metric([source], level.records)
            spool_bytes.add_metric([source], level.bytes)
            spool_age.add_metric([source], level.oldest_age_s)
        yield from (lag_records, lag_seconds, spool_records, spool_bytes, spool_age)


class StateTelemetry:
    """Events of checkpoints, spools and fsyncs; `self.log`, `self.sink` and `self.ledger` come from Telemetry."""

    log: Any
    sink: str
    ledger: Any

    def _init_state_metrics(self, r: CollectorRegistry) -> None:
        self.checkpoint_saves = Counter(
            "tweet_producer_checkpoint_saves", "Checkpoints (and spool commits) written.", ["source"], registry=r
        )
        self.checkpoint_errors = Counter(
            "tweet_producer_checkpoint_errors",
            "Checkpoints that could not be used or written, by reason (unusable, foreign, write_failed).",
            ["source", "reason"],
            registry=r,
        )
        self.fsyncs = Counter("tweet_producer_fsyncs", "fsync calls on durable state, by file.", ["file"], registry=r)
        self.kept = Counter(
            "tweet_producer_records_kept",
            "Records left for the next start at shutdown (after the checkpoint, or in the spool): not sent, not lost.",
            ["source"],
            registry=r,
        )
        self.spool_dropped = Counter(
            "tweet_producer_spool_dropped_records",
            "Records the spool dropped when full (when_full: drop_oldest).",
            ["source"],
            registry=r,
        )
        self.spool_blocked = Counter(
            "tweet_producer_spool_blocked_seconds", "Time sources waited for room in a full spool.", ["source"], registry=r
        )
        self.spool_replayed = Counter(
            "tweet_producer_spool_replayed_records",
            "Records an earlier run left in the spool, sent in this one.",
            ["source"],
            registry=r,
        )
        self.spool_errors = Counter(
            "tweet_producer_spool_errors",
            "Spool write failures and damaged data cut at recovery, by kind.",
            ["source", "kind"],
            registry=r,
        )
        self.durability = DurabilityCollector()
        r.register(self.durability)
        self.state_log_limiter = RateLimitedLog(_REPEATED_STATE_LOG_INTERVAL_S)

    # --- checkpoints -----------------------------------------------------------------------------

    def checkpoint_missing(self, source: str) -> None:
        self.log.info("checkpoint_missing", source=source, note="no checkpoint yet: starting from the configured beginning")

    def checkpoint_loaded(self, source: str, path: Path, saved_at: str, state: Any = None) -> None:
        self.log.info("checkpoint_loaded", source=source, path=str(path), saved_at=saved_at, state=state)

    def checkpoint_unusable(self, source: str, path: Path, reason: str, moved_to: Path | None) -> None:
        kind = "foreign" if reason.startswith("foreign") else "unusable"
        self.checkpoint_errors.labels(source=source, reason=kind).inc()
        # Foreign is expected after a change of stream (and at every start on the embedded stack): a warning.
        log = self.log.warning if kind == "foreign" else self.log.error
        log(
            "checkpoint_unusable",
            source=source,
            path=str(path),
            reason=reason,
            moved_to=str(moved_to) if moved_to else None,
            note="starting from the configured beginning: records may be sent again, none is skipped",
        )

    def checkpoint_saved(self, source: str, seconds: float) -> None:
        self.checkpoint_saves.labels(source=source).inc()
        self.fsyncs.labels(file=FILE_CHECKPOINT).inc(2)  # the file and its directory

    def checkpoint_write_failed(self, source: str, error: BaseException) -> None:
        self.checkpoint_errors.labels(source=source, reason="write_failed").inc()
        self.state_log_limiter.emit(
            ("checkpoint_write_failed", source),
            self.log.error,
            "checkpoint_write_failed",
            source=source,
            error=f"{type(error).__name__}: {error}",
            note="delivery goes on; a restart would re-read more",
        )

    # --- records kept for the next start -------------------------------------------------------------

    def records_kept(self, by_source: _Tally[str]) -> None:
        for source, count in by_source.items():
            self.kept.labels(source=source).inc(count)
        with self.ledger.lock:
            self.ledger.kept.update(by_source)
        if by_source:
            self.log.info(
                "records_kept",
                records=sum(by_source.values()),
                by_source=dict(by_source),
                note="not sent before the shutdown deadline; read again at the next start",
            )

    # --- fsyncs ------------------------------------------------------------------------------------

    def fsynced(self, file: str, count: int = 1) -> None:
        self.fsyncs.labels(file=file).inc(count)


class SpoolEventsFor:
    """The spool's events for one source (daemon/spool.py `SpoolEvents`), logged and counted with its name."""

    def __init__(self, telemetry: Any, source: str) -> None:
        self.telemetry = telemetry
        self.source = source

    def spool_fsync(self, seconds: float) -> None:
        self.telemetry.fsynced(FILE_SPOOL)

    def spool_dropped(self, records: int, first_origin: str | None, last_origin: str | None) -> None:
        t = self.telemetry
        t.spool_dropped.labels(source=self.source).inc(records)
        with t.ledger.lock:
            t.ledger.dropped[self.source] += records
        t.state_log_limiter.emit(
            ("spool_dropped", self.source),
            t.log.error,
            "spool_dropped",
            source=self.source,
            records=records,
            first_origin=first_origin,
            last_origin=last_origin,
            note="the spool is full (when_full: drop_oldest)",
        )

    def spool_blocked(self, seconds: float) -> None:
        t = self.telemetry
        t.spool_blocked.labels(source=self.source).inc(seconds)
        t.state_log_limiter.emit(
            ("spool_full", self.source),
            t.log.warning,
            "spool_full",
            source=self.source,
            waited_s=round(seconds, 3),
            note="the spool is full (when_full: block): the source waits",
        )

    def spool_write_failed(self, error: OSError) -> None:
        t = self.telemetry
        t.spool_errors.labels(source=self.source, kind="write_failed").inc()
        t.state_log_limiter.emit(
            ("spool_write_failed", self.source),
            t.log.error,
            "spool_write_failed",
            source=self.source,
            error=f"{type(error).__name__}: {error}",
            note="the source waits until the spool can be written again",
        )

    def spool_recovered(self, records: int, bytes: int) -> None:  # noqa: A002 - the protocol's name
        self.telemetry.log.info("spool_recovered", source=self.source, records=records, bytes=bytes)

    def spool_corrupt(self, segment: str, offset: int, detail: str) -> None:
        t = self.telemetry
        t.spool_errors.labels(source=self.source, kind="corrupt").inc()
        t.log.error(
            "spool_corrupt",
            source=self.source,
            segment=segment,
            offset=offset,
            detail=detail,
            note="the damaged tail was cut; records before it are kept",
        )
