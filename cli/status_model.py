"""The snapshot model of `tweet-producer status`: one /metrics body as per-source and per-sink figures, and
the rates between two of them.

A metric the daemon does not expose at all (an older version) reads as None, shown "-"; a labelled metric that
is exposed but has no sample for a source or sink yet means zero, since prometheus-client only emits a child
once it was touched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Value = float | None
_Samples = dict[str, list[tuple[dict[str, str], float]]]


class StatusError(Exception):
    """The daemon's /metrics could not be read or understood."""


@dataclass(frozen=True)
class SourceFigures:
    connected: Value = None
    received: Value = None
    dead_lettered: Value = None
    kept: Value = None
    reconnects: Value = None
    restarts: Value = None
    lag_records: Value = None
    lag_seconds: Value = None
    spool_records: Value = None
    spool_oldest_age_s: Value = None


@dataclass(frozen=True)
class SinkFigures:
    healthy: Value = None
    sent: Value = None
    put_errors: Value = None
    in_flight: Value = None
    buffer_records: Value = None
    buffer_bytes: Value = None
    retries: Value = None
    throttles: Value = None


@dataclass(frozen=True)
class Snapshot:
    """One scrape: per-source and per-sink figures, and when it was taken (monotonic seconds)."""

    taken_at: float
    sources_running: Value = None
    sources: dict[str, SourceFigures] = field(default_factory=dict)
    sinks: dict[str, SinkFigures] = field(default_factory=dict)
    # Per source, the state /readyz reports (running, connected, disconnected, finished, not running); empty
    # when the daemon has no /readyz (an older version).
    states: dict[str, str] = field(default_factory=dict)
    # 1: the running config is the file's latest; 0: the last reload was refused; None: a daemon without reloads.
    reload_successful: Value = None
    reloads: Value = None  # reload attempts since start, all results


@dataclass(frozen=True)
class Rates:
    """Records/s between two snapshots; None where a figure is missing or went backwards (a restart)."""

    received: dict[str, Value]
    sent: dict[str, Value]


def _samples(text: str) -> _Samples:
    """Sample name -> [(labels, value)]; every exposed family name is present, even with no samples."""
    out: _Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            # Counters are exposed as NAME_total; register both so an empty family still counts as exposed.
            base = family.name
            out.setdefault(base, [])
            if family.type == "counter":
                out.setdefault(base + "_total", [])
            for sample in family.samples:
                out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    # The parser raises bare ValueError/IndexError/KeyError on bad lines: all of them mean "not our format".
    except Exception as exc:
        raise StatusError(f"not Prometheus text: {type(exc).__name__}: {exc}") from exc
    return out


def _by(samples: _Samples, name: str, label: str, key: str) -> Value:
    """The sum over `name`'s samples whose `label` is `key`; 0 if exposed without one, None if not exposed."""
    rows = samples.get(name)
    if rows is None:
        return None
    return sum(value for labels, value in rows if labels.get(label) == key)


def _gauge(samples: _Samples, name: str, label: str | None = None, key: str = "") -> Value:
    """A gauge's value, or None when it (or its sample for `key`) is absent: an absent gauge is not zero."""
    for labels, value in samples.get(name, []):
        if label is None or labels.get(label) == key:
            return value
    return None


def _keys(samples: _Samples, label: str, names: Iterable[str]) -> list[str]:
    found = {labels[label] for name in names for labels, _ in samples.get(name, []) if label in labels}
    return sorted(found)


_SOURCE_METRICS = (
    "tweet_producer_records_received_total",
    "tweet_producer_records_failed_total",
    "tweet_producer_records_kept_total",
    "tweet_producer_source_connected",
    "tweet_producer_source_reconnects_total",
    "tweet_producer_source_restarts_total",
    "tweet_producer_checkpoint_lag_records",
    "tweet_producer_spool_records",
)
_SINK_METRICS = (
    "tweet_producer_records_sent_total",
    "tweet_producer_sink_healthy",
    "tweet_producer_sink_requests_in_flight",
    "tweet_producer_put_requests_total",
    "tweet_producer_records_retried_total",
)


def parse_snapshot(text: str, taken_at: float) -> Snapshot:
    """The figures of one /metrics body."""
    s = _samples(text)
    sources = {
        name: SourceFigures(
            connected=_gauge(s, "tweet_producer_source_connected", "source", name),
            received=_by(s, "tweet_producer_records_received_total", "source", name),
            dead_lettered=_by(s, "tweet_producer_records_failed_total", "source", name),
            kept=_by(s, "tweet_producer_records_kept_total", "source", name),
            reconnects=_by(s, "tweet_producer_source_reconnects_total", "source", name),
            restarts=_by(s, "tweet_producer_source_restarts_total", "source", name),
            lag_records=_gauge(s, "tweet_producer_checkpoint_lag_records", "source", name),
            lag_seconds=_gauge(s, "tweet_producer_checkpoint_lag_seconds", "source", name),
            spool_records=_gauge(s, "tweet_producer_spool_records", "source", name),
            spool_oldest_age_s=_gauge(s, "tweet_producer_spool_oldest_record_age_seconds", "source", name),
        )
        for name in _keys(s, "source", _SOURCE_METRICS)
    }
    sinks = {
        name: SinkFigures(
            healthy=_gauge(s, "tweet_producer_sink_healthy", "sink", name),
            sent=_by(s, "tweet_producer_records_sent_total", "sink", name),
            put_errors=_by(s, "tweet_producer_put_entry_errors_total", "sink", name),
            in_flight=_gauge(s, "tweet_producer_sink_requests_in_flight", "sink", name),
            # The daemon has one buffer, in front of its one sink.
            buffer_records=_gauge(s, "tweet_producer_buffer_records"),
            buffer_bytes=_gauge(s, "tweet_producer_buffer_bytes"),
            retries=_by(s, "tweet_producer_records_retried_total", "sink", name),
            throttles=_by(s, "tweet_producer_sink_shard_throttled_records_total", "sink", name),
        )
        for name in _keys(s, "sink", _SINK_METRICS)
    }
    reload_counts = [value for _, value in s.get("tweet_producer_config_reloads_total", [])]
    return Snapshot(
        taken_at, _gauge(s, "tweet_producer_sources_running"), sources, sinks,
        reload_successful=_gauge(s, "tweet_producer_config_last_reload_successful"),
        reloads=sum(reload_counts) if reload_counts else None,
    )  # fmt: skip


def _rate(before: Value, after: Value, seconds: float) -> Value:
    if before is None or after is None or seconds <= 0 or after < before:
        return None
    return (after - before) / seconds


def rates(before: Snapshot, after: Snapshot) -> Rates:
    seconds = after.taken_at - before.taken_at
    received = {
        name: _rate(before.sources[name].received if name in before.sources else None, figures.received, seconds)
        for name, figures in after.sources.items()
    }
    sent = {
        name: _rate(before.sinks[name].sent if name in before.sinks else None, figures.sent, seconds)
        for name, figures in after.sinks.items()
    }
    return Rates(received, sent)


def parse_ready_states(body: bytes) -> dict[str, str]:
    """Per-source states from a /readyz JSON body; {} for anything else (an older daemon answers it with metrics)."""
    try:
        report = json.loads(body)
        each = report["checks"]["sources"]["each"]
        return {str(name): str(check["state"]) for name, check in each.items()}
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}
