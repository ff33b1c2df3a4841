"""The sink's delivery-engine events (requests in flight, shards, aggregation, attempts): log and count.

A mixin of `Telemetry`: it registers its metrics in the same registry. Each event is called per request
or per batch of completions by the sink, never per record.
"""

from __future__ import annotations

import threading
from collections import Counter as _Counts
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric

from daemon.logs import RateLimitedLog

# Attempts a record needed before it ended: 1 is the common case; the tail shows retry storms.
_ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50)
# Misroutes and possible duplicates come in bursts while a stream reshards or the network flaps.
_REPEATED_ENGINE_LOG_INTERVAL_S = 10.0


class AttemptsHistogram:
    """`tweet_producer_sink_record_attempts{sink}`: a histogram fed a batch of counts at a time
    (prometheus-client's Histogram observes one value per call: one call per record)."""

    def __init__(self, sink: str) -> None:
        self.sink = sink
        self._lock = threading.Lock()
        self._counts: _Counts[int] = _Counts()

    def add(self, attempts: Mapping[int, int]) -> None:
        with self._lock:
            self._counts.update(attempts)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts = sorted(self._counts.items())
        buckets: list[tuple[str, float]] = []
        for bound in _ATTEMPT_BUCKETS:
            buckets.append((str(float(bound)), float(sum(n for tries, n in counts if tries <= bound))))
        total = sum(n for _, n in counts)
        buckets.append(("+Inf", float(total)))
        family = HistogramMetricFamily(
            "tweet_producer_sink_record_attempts", "Attempts each record needed before it ended.", labels=["sink"]
        )
        family.add_metric([self.sink], buckets, float(sum(tries * n for tries, n in counts)))
        yield family


class SinkEngineTelemetry:
    sink: str
    log: Any

    def _init_engine_metrics(self, registry: CollectorRegistry) -> None:
        r = registry
        self.in_flight = Gauge(
            "tweet_producer_sink_requests_in_flight", "Put requests on the wire right now.", ["sink"], registry=r
        )
        self.shard_throttles = Counter(
            "tweet_producer_sink_shard_throttled_records",
            "Entries refused with a throttling code, by shard.",
            ["sink", "shard"],
            registry=r,
        )
        self.shard_map_refreshes = Counter(
            "tweet_producer_sink_shard_map_refreshes",
            "Times the shard map was listed again, by reason.",
            ["sink", "reason"],
            registry=r,
        )
        self.shards_open = Gauge("tweet_producer_sink_shards", "Open shards in the sink's shard map.", ["sink"], registry=r)
        self.aggregated_user = Counter(
            "tweet_producer_sink_aggregated_user_records",
            "User records packed into aggregated Kinesis records.",
            ["sink"],
            registry=r,
        )
        self.aggregated_kinesis = Counter(
            "tweet_producer_sink_aggregated_kinesis_records",
            "Aggregated Kinesis records sent (each many user records).",
            ["sink"],
            registry=r,
        )
        self.record_attempts = AttemptsHistogram(self.sink)
        r.register(self.record_attempts)
        self.misrouted = Counter(
            "tweet_producer_sink_misrouted_records",
            "Entries that landed on another shard than the map said.",
            ["sink"],
            registry=r,
        )
        self.duplicates = Counter(
            "tweet_producer_sink_possible_duplicates",
            "Records sent again after an answer was lost, by reason.",
            ["sink", "reason"],
            registry=r,
        )
        self.in_flight.labels(sink=self.sink).set(0)
        self.engine_log_limiter = RateLimitedLog(_REPEATED_ENGINE_LOG_INTERVAL_S)

    def requests_in_flight(self, *, count: int) -> None:
        self.in_flight.labels(sink=self.sink).set(count)

    def shard_throttled(self, *, shard_id: str, records: int) -> None:
        self.shard_throttles.labels(sink=self.sink, shard=shard_id).inc(records)

    def shard_map_refreshed(self, *, shards: int, reason: str, changed: bool) -> None:
        self.shard_map_refreshes.labels(sink=self.sink, reason=reason).inc()
        self.shards_open.labels(sink=self.sink).set(shards)
        log = self.log.info if changed or reason == "start" else self.log.debug
        log("shard_map_refreshed", sink=self.sink, shards=shards, reason=reason, changed=changed)

    def records_aggregated(self, *, user_records: int, kinesis_records: int) -> None:
        self.aggregated_user.labels(sink=self.sink).inc(user_records)
        self.aggregated_kinesis.labels(sink=self.sink).inc(kinesis_records)

    def records_settled(self, *, attempts: Mapping[int, int]) -> None:
        self.record_attempts.add(attempts)

    def records_misrouted(self, *, records: int, shard_id: str, detail: str) -> None:
        self.misrouted.labels(sink=self.sink).inc(records)
        self.engine_log_limiter.emit(
            ("records_misrouted",),
            self.log.warning,
            "records_misrouted",
            sink=self.sink,
            records=records,
            shard=shard_id,
            detail=detail,
        )

    def duplicates_possible(self, *, records: int, reason: str) -> None:
        self.duplicates.labels(sink=self.sink, reason=reason).inc(records)
        self.engine_log_limiter.emit(
            ("duplicates_possible", reason),
            self.log.warning,
            "duplicates_possible",
            sink=self.sink,
            records=records,
            reason=reason,
        )
