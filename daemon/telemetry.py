"""Operational events: each function both logs (structlog) and counts (prometheus-client).

One `Telemetry` per daemon owns its own Prometheus registry, so tests and embedded runs never share
counters. A `Ledger` keeps the per-source totals the final summary reports.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter as _Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from daemon.ledger import FilteredCollector, Ledger, ReceivedCollector, ReceivedTally
from daemon.logs import RateLimitedLog, get_logger
from daemon.telemetry_reload import ReloadEvents
from daemon.telemetry_sink import SinkEngineTelemetry
from daemon.telemetry_state import StateTelemetry

# Up to the 500 records one PutRecords call may carry.
_BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 200, 300, 400, 500)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Put failures and retries repeat with every backoff while a stream throttles or refuses: one line per
# error code and interval, the next one carrying how many were held back (the counters see every one).
_REPEATED_SINK_LOG_INTERVAL_S = 10.0
# One reconnect or protocol-message line per source and reason this often.
_REPEATED_SOURCE_LOG_INTERVAL_S = 10.0
# One record_dead_lettered line per source and reason this often; the rest are counted in the next line.
_REPEATED_DEAD_LETTER_LOG_INTERVAL_S = 10.0


class Telemetry(SinkEngineTelemetry, StateTelemetry):
    """The daemon's metrics registry, counters and event functions."""

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self.registry = CollectorRegistry(auto_describe=True)
        self.ledger = Ledger()
        self.log = get_logger()
        r = self.registry
        self.sent = Counter("tweet_producer_records_sent", "Records the sink accepted.", ["sink"], registry=r)
        self.failed = Counter(
            "tweet_producer_records_failed", "Records dead-lettered, by reason.", ["source", "sink", "reason"], registry=r
        )
        self.unsent = Counter(
            "tweet_producer_records_unsent", "Records not delivered before the shutdown deadline.", ["source", "sink"], registry=r
        )
        self.lost = Counter(
            "tweet_producer_records_lost",
            "Records neither delivered nor kept in the dead-letter file (after a fatal error); their origins are logged.",
            ["source", "sink"],
            registry=r,
        )
        r.register(FilteredCollector(self.ledger.filtered_tallies))
        # Registered after the outcome counters on purpose: a scrape collects in registration order, and a
        # record is counted received before any outcome, so a scrape always sees sent+failed+unsent+lost <= received.
        self.received = ReceivedCollector(self.ledger.tallies)
        r.register(self.received)
        self.refused = Counter(
            "tweet_producer_inputs_refused",
            "Input a source abandoned at shutdown handed over after its context was closed (not taken, logged).",
            ["source"],
            registry=r,
        )
        self.fatal_errors = Counter(
            "tweet_producer_fatal_errors",
            "Failures of the daemon itself that stopped it, by component.",
            ["component"],
            registry=r,
        )
        self.retried = Counter("tweet_producer_records_retried", "Records sent again after a failure.", ["sink"], registry=r)
        self.buffer_records = Gauge("tweet_producer_buffer_records", "Records waiting in the buffer.", registry=r)
        self.buffer_bytes = Gauge(
            "tweet_producer_buffer_bytes",
            "Memory held by buffered records (data + key + origin + a per-record overhead), bounded by buffer.max_bytes.",
            registry=r,
        )
        self.put_latency = Histogram(
            "tweet_producer_put_latency_seconds", "Duration of one put request.", ["sink"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_records = Histogram(
            "tweet_producer_batch_records", "Records per batch written.", ["sink"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.sink_errors = Counter(
            "tweet_producer_sink_errors", "Unexpected exceptions from the sink, by stage.", ["sink", "stage"], registry=r
        )
        self.source_restarts = Counter(
            "tweet_producer_source_restarts", "Source crashes followed by a restart.", ["source"], registry=r
        )
        self.sources_running = Gauge("tweet_producer_sources_running", "Sources currently running.", registry=r)
        self.source_connected = Gauge(
            "tweet_producer_source_connected", "1 while a live source is connected to its server.", ["source"], registry=r
        )
        self.last_request_at = float("-inf")  # monotonic time the sink last completed a request (any result)
        # Each live source's last reported connection state (read by /readyz).
        self.connections: dict[str, bool] = {}
        self.reloads = ReloadEvents(r, self.log)
        self.source_reconnects = Counter(
            "tweet_producer_source_reconnects", "Reconnections of a live source, by reason.", ["source", "reason"], registry=r
        )
        self.source_protocol_messages = Counter(
            "tweet_producer_source_protocol_messages",
            "Protocol messages that are not records (in-band errors, notices, unknown kinds), by kind.",
            ["source", "kind"],
            registry=r,
        )
        self.acknowledge_errors = Counter(
            "tweet_producer_source_acknowledge_errors", "Times a source's acknowledge() raised.", ["source"], registry=r
        )
        # Reconnect loops and in-band notices can repeat every few seconds for hours.
        self.source_log_limiter = RateLimitedLog(_REPEATED_SOURCE_LOG_INTERVAL_S)
        # --- sink requests and health (the SinkEvents section below) ---
        self.put_requests = Counter(
            "tweet_producer_put_requests", "Put requests (one per call), by result.", ["sink", "result"], registry=r
        )
        self.put_entry_errors = Counter(
            "tweet_producer_put_entry_errors",
            "Entries a put request did not deliver, by error code.",
            ["sink", "code"],
            registry=r,
        )
        self.sink_healthy = Gauge(
            "tweet_producer_sink_healthy",
            "1 while the destination takes writes, 0 while it refuses them all.",
            ["sink"],
            registry=r,
        )
        self.sink_unhealthy_reason = Gauge(
            "tweet_producer_sink_unhealthy_reason",
            "1 for the error code an unhealthy sink is refused with.",
            ["sink", "reason"],
            registry=r,
        )
        self.sink_healthy.labels(sink=sink).set(1)
        self.sink_log_limiter = RateLimitedLog(_REPEATED_SINK_LOG_INTERVAL_S)
        # A file of bad lines dead-letters at full speed: the dead-letter file keeps every origin, the log a sample.
        self.dead_letter_log_limiter = RateLimitedLog(_REPEATED_DEAD_LETTER_LOG_INTERVAL_S)
        self._unhealthy_since: float | None = None
        self._init_engine_metrics(r)
        self._init_state_metrics(r)

    # --- records -------------------------------------------------------------------------------

    def received_tally(self, source: str) -> ReceivedTally:
        """The received counter of `source`, for its context to count into without a metric call per record."""
        with self.ledger.lock:
            tally = self.ledger.tallies.get(source)
            if tally is None:
                tally = self.ledger.tallies[source] = ReceivedTally()
            return tally

    def filtered_tally(self, source: str) -> ReceivedTally:
        """The filtered counter of `source` (counted per record by its context, like received)."""
        with self.ledger.lock:
            tally = self.ledger.filtered_tallies.get(source)
            if tally is None:
                tally = self.ledger.filtered_tallies[source] = ReceivedTally()
            return tally

    def record_received(self, source: str) -> None:
        self.received_tally(source).add()

    def records_sent(self, by_source: _Tally[str], batch_size: int) -> None:
        total = sum(by_source.values())
        self.sent.labels(sink=self.sink).inc(total)
        self.batch_records.labels(sink=self.sink).observe(batch_size)
        with self.ledger.lock:
            self.ledger.sent.update(by_source)

    def record_dead_lettered(self, source: str, origin: str, reason: str, detail: str) -> None:
        self.failed.labels(source=source, sink=self.sink, reason=reason).inc()
        with self.ledger.lock:
            self.ledger.dead_lettered[source] += 1
        self.dead_letter_log_limiter.emit(
            (source, reason), self.log.warning, "record_dead_lettered", source=source, origin=origin, reason=reason, detail=detail
        )

    def records_unsent(self, by_source: _Tally[str]) -> None:
        for source, count in by_source.items():
            self.unsent.labels(source=source, sink=self.sink).inc(count)
        with self.ledger.lock:
            self.ledger.unsent.update(by_source)
        if by_source:
            self.log.error("records_unsent", sink=self.sink, records=sum(by_source.values()), by_source=dict(by_source))

    def records_lost(self, records: list[tuple[str, str]], why: str) -> None:
        """(source, origin) records that could not be kept anywhere: one line per call, naming every origin."""
        if not records:
            return
        by_source = _Tally(source for source, _ in records)
        for source, count in by_source.items():
            self.lost.labels(source=source, sink=self.sink).inc(count)
        with self.ledger.lock:
            self.ledger.lost.update(by_source)
        self.log.error("records_lost", sink=self.sink, records=len(records), why=why, origins=[origin for _, origin in records])

    def input_refused(self, source: str, origin: str, reason: str) -> None:
        """An abandoned source handed input over after shutdown closed its context: it was not taken."""
        self.refused.labels(source=source).inc()
        self.log.warning("input_refused_after_shutdown", source=source, origin=origin, reason=reason)

    def fatal_error(self, component: str, error: BaseException) -> None:
        """A part of the daemon itself failed: the daemon stops and exits non-zero so it gets restarted."""
        self.fatal_errors.labels(component=component).inc()
        cause = error.__cause__ or error.__context__
        self.log.critical(
            "fatal_error",
            component=component,
            error=f"{type(error).__name__}: {error}",
            cause=None if cause is None else f"{type(cause).__name__}: {cause}",
            exc_info=error,
        )

    def buffer_level(self, records: int, size: int) -> None:
        self.buffer_records.set(records)
        self.buffer_bytes.set(size)

    # --- sink events (the SinkEvents protocol) ---------------------------------------------------

    def put_requested(self, *, result: str, records: int, accepted: int, latency_s: float | None) -> None:
        self.last_request_at = time.monotonic()  # the sink side makes progress (read by the systemd watchdog)
        self.put_requests.labels(sink=self.sink, result=result).inc()
        if latency_s is not None:
            self.put_latency.labels(sink=self.sink).observe(latency_s)
        self.log.debug(
            "put_requested",
            sink=self.sink,
            result=result,
            records=records,
            accepted=accepted,
            latency_s=None if latency_s is None else round(latency_s, 4),
        )

    def put_failed(self, *, code: str, records: int, detail: str) -> None:
        self.put_entry_errors.labels(sink=self.sink, code=code).inc(records)
        self.sink_log_limiter.emit(
            ("put_failed", code), self.log.warning, "put_failed", sink=self.sink, code=code, records=records, detail=detail
        )

    def records_retried(self, *, records: int, attempt: int, delay_s: float, reason: str) -> None:
        self.retried.labels(sink=self.sink).inc(records)
        self.sink_log_limiter.emit(
            ("records_retried", reason),
            self.log.info,
            "records_retried",
            sink=self.sink,
            records=records,
            attempt=attempt,
            delay_s=round(delay_s, 3),
            reason=reason,
        )

    def sink_health(self, *, healthy: bool, reason: str, detail: str) -> None:
        """The sink's destination turned unusable (records held, not dead-lettered) or usable again."""
        self.sink_healthy.labels(sink=self.sink).set(1 if healthy else 0)
        self.sink_unhealthy_reason.clear()
        if healthy:
            since, self._unhealthy_since = self._unhealthy_since, None
            seconds = None if since is None else round(time.monotonic() - since, 3)
            self.log.info("sink_healthy", sink=self.sink, after=reason, unhealthy_s=seconds, detail=detail)
            return
        self.sink_unhealthy_reason.labels(sink=self.sink, reason=reason).set(1)
        if self._unhealthy_since is None:
            self._unhealthy_since = time.monotonic()
        self.log.error("sink_unhealthy", sink=self.sink, reason=reason, detail=detail)

    def sink_error(self, stage: str, error: BaseException, records: int) -> None:
        """The sink raised where its contract says it reports: its records are dead-lettered instead."""
        self.sink_errors.labels(sink=self.sink, stage=stage).inc()
        self.log.error("sink_error", sink=self.sink, stage=stage, records=records, error=f"{type(error).__name__}: {error}")

    # --- supervision ----------------------------------------------------------------------------

    def source_started(self, source: str, attempt: int) -> None:
        self.sources_running.inc()
        self.log.info("source_started", source=source, attempt=attempt)

    def source_finished(self, source: str) -> None:
        self.sources_running.dec()
        self.log.info("source_finished", source=source)

    def source_crashed(
        self, source: str, error: BaseException, restart_in_s: float, position: str | None = None, skipped: bool = False
    ) -> None:
        """`position`: the input it crashed at (if the source has positions); `skipped`: that input was dead-lettered."""
        self.sources_running.dec()
        self.source_restarts.labels(source=source).inc()
        self.log.error(
            "source_crashed",
            source=source,
            error=f"{type(error).__name__}: {error}",
            restart_in_s=round(restart_in_s, 2),
            position=position,
            skipped_input=skipped,
        )

    # --- live sources ---------------------------------------------------------------------------

    def source_connection(self, source: str, connected: bool, detail: str) -> None:
        self.source_connected.labels(source=source).set(1 if connected else 0)
        self.connections[source] = connected
        log = self.log.info if connected else self.log.warning
        log("source_connected" if connected else "source_disconnected", source=source, detail=detail)

    def source_removed(self, source: str) -> None:
        """A reload stopped `source` for good: its connection state goes (from /readyz and the connected gauge, so a
        removed source's last "disconnected" does not alert forever); its counters stay until the next start."""
        self.connections.pop(source, None)
        with contextlib.suppress(KeyError):  # a source that never reported a connection has no series
            self.source_connected.remove(source)

    def source_reconnecting(self, source: str, reason: str, delay_s: float, detail: str) -> None:
        self.source_reconnects.labels(source=source, reason=reason).inc()
        self.source_log_limiter.emit(
            ("reconnect", source, reason),
            self.log.warning,
            "source_reconnecting",
            source=source,
            reason=reason,
            delay_s=round(delay_s, 3),
            detail=detail,
        )

    def acknowledge_failed(self, source: str, error: BaseException, records: int) -> None:
        """A source's `acknowledge` raised: its checkpoint may lag (the records themselves are accounted)."""
        self.acknowledge_errors.labels(source=source).inc()
        self.source_log_limiter.emit(
            ("acknowledge_failed", source),
            self.log.error,
            "acknowledge_failed",
            source=source,
            records=records,
            error=f"{type(error).__name__}: {error}",
        )

    def source_protocol_message(self, source: str, kind: str, detail: str) -> None:
        self.source_protocol_messages.labels(source=source, kind=kind).inc()
        self.source_log_limiter.emit(
            ("protocol", source, kind), self.log.warning, "source_protocol_message", source=source, kind=kind, detail=detail
        )
