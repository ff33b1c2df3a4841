"""`tweet-producer status`: a terminal view of a running daemon, read from its `/metrics`.

Two scrapes `--interval` apart give the rates; the counters themselves are shown as totals. A metric the
daemon does not expose at all (an older version) shows as "-"; a labelled metric that is exposed but has no
sample for a source or sink yet means zero, since prometheus-client only emits a child once it was touched.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

DEFAULT_URL = "http://127.0.0.1:9477/metrics"
DEFAULT_INTERVAL_S = 2.0
# A daemon busy flushing still answers a scrape within a second; longer means it is hung or unreachable.
FETCH_TIMEOUT_S = 5.0
# A /metrics body is a few tens of kilobytes; refuse anything absurd instead of reading it all.
MAX_BODY_BYTES = 8 * 1024 * 1024
CLEAR_SCREEN = "\x1b[H\x1b[2J"
MISSING = "-"
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
# Bind-all addresses are not where a client connects: scrape the loopback instead.
_ANY_HOSTS = {"0.0.0.0": "127.0.0.1",  # noqa: S104 - mapped away from, not bound to
               "::": "::1", "[::]": "[::1]", "": "127.0.0.1"}

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
    return Snapshot(taken_at, _gauge(s, "tweet_producer_sources_running"), sources, sinks)


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


def _num(value: Value, digits: int = 0) -> str:
    if value is None:
        return MISSING
    return f"{value:.{digits}f}"


def _source_state(figures: SourceFigures) -> str:
    # Only live sources (x, jetstream, mastodon) export `connected`; file-like ones have no per-source state.
    if figures.connected is None:
        return MISSING
    return "connected" if figures.connected >= 1 else "disconnected"


def _healthy(value: Value) -> str:
    if value is None:
        return MISSING
    return "yes" if value >= 1 else "NO"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    # The name column is left-aligned, the figures right-aligned so digits line up.
    return [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True)))
        for line in [header, *rows]
    ]


SOURCE_HEADER = [
    "SOURCE", "STATE", "REC/S", "RECEIVED", "DEAD", "KEPT", "RECONN", "RESTARTS", "LAG", "LAG_S", "SPOOL", "SPOOL_AGE_S"
]
SINK_HEADER = ["SINK", "HEALTHY", "SENT/S", "SENT", "PUT_ERR", "IN_FLIGHT", "BUF_REC", "BUF_BYTES", "RETRIES", "THROTTLES"]


def render(url: str, after: Snapshot, rate: Rates) -> str:
    """The text view of one snapshot and the rates leading to it."""
    running = _num(after.sources_running)
    lines = [f"tweet-producer status  {url}  sources running: {running}", ""]
    lines += _table(
        SOURCE_HEADER,
        [
            [
                name, _source_state(f), _num(rate.received.get(name), 1), _num(f.received), _num(f.dead_lettered),
                _num(f.kept), _num(f.reconnects), _num(f.restarts), _num(f.lag_records), _num(f.lag_seconds, 1),
                _num(f.spool_records), _num(f.spool_oldest_age_s, 1),
            ]
            for name, f in after.sources.items()
        ],
    )
    lines.append("")
    lines += _table(
        SINK_HEADER,
        [
            [
                name, _healthy(f.healthy), _num(rate.sent.get(name), 1), _num(f.sent), _num(f.put_errors),
                _num(f.in_flight), _num(f.buffer_records), _num(f.buffer_bytes), _num(f.retries), _num(f.throttles),
            ]
            for name, f in after.sinks.items()
        ],
    )
    return "\n".join(lines) + "\n"


def scrape(url: str, clock: Callable[[], float] = time.monotonic) -> Snapshot:
    """One snapshot of the daemon at `url`; StatusError with the reason when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 - an operator's URL
            body = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise StatusError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise StatusError(str(exc.reason)) from exc
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed URL
        raise StatusError(f"{type(exc).__name__}: {exc}") from exc
    if len(body) > MAX_BODY_BYTES:
        raise StatusError(f"response larger than {MAX_BODY_BYTES} bytes")
    return parse_snapshot(body.decode("utf-8", errors="replace"), clock())


def url_from_listen(listen: str) -> str:
    """The /metrics URL of a `metrics.listen` HOST:PORT."""
    host, _, port = listen.rpartition(":")
    host = _ANY_HOSTS.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, default=None, help="take the URL from this config's metrics.listen")
    parser.add_argument("--url", default=None, help=f"the daemon's metrics URL (default: {DEFAULT_URL})")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument(
        "--interval", type=float, default=DEFAULT_INTERVAL_S, help=f"seconds between scrapes (default: {DEFAULT_INTERVAL_S})"
    )


def run_status(url: str, *, once: bool, interval_s: float, out: Any = None, sleep: Callable[[float], None] = time.sleep) -> int:
    """Print the view of the daemon at `url`: once, or redrawn every `interval_s` until Ctrl-C."""
    out = out or sys.stdout
    if not interval_s > 0:
        print(f"tweet-producer status: --interval must be above 0, not {interval_s:g}", file=sys.stderr)
        return EXIT_USAGE
    try:
        before = scrape(url)
        sleep(interval_s)
        after = scrape(url)
    except StatusError as exc:
        print(f"tweet-producer status: cannot read {url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 0
    if once:
        out.write(render(url, after, rates(before, after)))
        return 0
    error = ""
    try:
        while True:
            out.write(CLEAR_SCREEN + render(url, after, rates(before, after)) + error)
            out.flush()
            sleep(interval_s)
            try:
                before, after = after, scrape(url)
                error = ""
            except StatusError as exc:
                # The daemon may be restarting: say so under the last figures and keep trying.
                error = f"\ncannot read {url}: {exc} (retrying every {interval_s:g}s)\n"
    except KeyboardInterrupt:
        out.write("\n")
        return 0


def main_status(args: argparse.Namespace, load: Callable[[Path], Any]) -> int:
    """The `status` command: `load` is the CLI's config loader (it prints the problems and returns None)."""
    url = args.url
    if url is None and args.config is not None:
        config = load(args.config)
        if config is None:
            return EXIT_USAGE
        url = url_from_listen(config.metrics.listen)
    return run_status(url or DEFAULT_URL, once=args.once, interval_s=args.interval)
