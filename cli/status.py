"""`tweet-producer status`: a terminal view of a running daemon, read from its `/metrics`.

Two scrapes `--interval` apart give the rates; the counters themselves are shown as totals. The parsing is in
cli/status_model.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.status_model import Rates, Snapshot, SourceFigures, StatusError, Value, parse_ready_states, parse_snapshot, rates

DEFAULT_URL = "http://127.0.0.1:9477/metrics"
DEFAULT_INTERVAL_S = 2.0
# A daemon busy flushing still answers a scrape within a second; longer means it is hung or unreachable.
FETCH_TIMEOUT_S = 5.0
# A /metrics body is a few tens of kilobytes; refuse anything absurd instead of reading it all.
MAX_BODY_BYTES = 8 * 1024 * 1024
CLEAR_SCREEN = "\x1b[H\x1b[2J"
MISSING = "-"
# Where the daemon reports each source's state (daemon/health.py), beside /metrics.
READY_PATH = "/readyz"
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
# Bind-all addresses are not where a client connects: scrape the loopback instead.
_ANY_HOSTS = {
    "0.0.0.0": "127.0.0.1",  # noqa: S104 - mapped away from, not bound to
    "::": "::1",
    "[::]": "[::1]",
    "": "127.0.0.1",
}


def _num(value: Value, digits: int = 0) -> str:
    if value is None:
        return MISSING
    return f"{value:.{digits}f}"


def _source_state(name: str, figures: SourceFigures, snapshot: Snapshot, rate: Value) -> str:
    state = snapshot.states.get(name)
    if state is not None:
        return state
    # No /readyz (an older daemon): live sources (x, jetstream, mastodon) still export `connected`; for the
    # others the records/s is the state that can be told.
    if figures.connected is not None:
        return "connected" if figures.connected >= 1 else "disconnected"
    if rate is None:
        return MISSING
    return "active" if rate > 0 else "idle"


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
    "SOURCE",
    "STATE",
    "REC/S",
    "RECEIVED",
    "DEAD",
    "KEPT",
    "RECONN",
    "RESTARTS",
    "LAG",
    "LAG_S",
    "SPOOL",
    "SPOOL_AGE_S",
]
SINK_HEADER = ["SINK", "HEALTHY", "SENT/S", "SENT", "PUT_ERR", "IN_FLIGHT", "BUF_REC", "BUF_BYTES", "RETRIES", "THROTTLES"]


def _config_state(snapshot: Snapshot) -> str:
    """How the last reload went, once there was one (an older daemon exports nothing: then nothing is said)."""
    if not snapshot.reloads:
        return ""
    reloads = _num(snapshot.reloads)
    if snapshot.reload_successful == 0:
        return f"  config: LAST RELOAD REFUSED ({reloads} reloads; see config_reload_failed in the log)"
    return f"  config: reloaded ({reloads} reloads)"


def render(url: str, after: Snapshot, rate: Rates) -> str:
    """The text view of one snapshot and the rates leading to it."""
    running = _num(after.sources_running)
    lines = [f"tweet-producer status  {url}  sources running: {running}{_config_state(after)}", ""]
    lines += _table(
        SOURCE_HEADER,
        [
            [
                name,
                _source_state(name, f, after, r),
                _num(r, 1),
                _num(f.received),
                _num(f.dead_lettered),
                _num(f.kept),
                _num(f.reconnects),
                _num(f.restarts),
                _num(f.lag_records),
                _num(f.lag_seconds, 1),
                _num(f.spool_records),
                _num(f.spool_oldest_age_s, 1),
            ]
            for name, f in after.sources.items()
            for r in [rate.received.get(name)]
        ],
    )
    lines.append("")
    lines += _table(
        SINK_HEADER,
        [
            [
                name,
                _healthy(f.healthy),
                _num(rate.sent.get(name), 1),
                _num(f.sent),
                _num(f.put_errors),
                _num(f.in_flight),
                _num(f.buffer_records),
                _num(f.buffer_bytes),
                _num(f.retries),
                _num(f.throttles),
            ]
            for name, f in after.sinks.items()
        ],
    )
    return "\n".join(lines) + "\n"


def _get(url: str) -> bytes:
    """The body at `url` (an error status still has one: /readyz answers 503 with its JSON)."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 - an operator's URL
            body: bytes = response.read(MAX_BODY_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise StatusError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise StatusError(str(exc.reason)) from exc
    except (OSError, ValueError) as exc:  # timeouts, resets, a malformed URL
        raise StatusError(f"{type(exc).__name__}: {exc}") from exc
    if len(body) > MAX_BODY_BYTES:
        raise StatusError(f"response larger than {MAX_BODY_BYTES} bytes")
    return body


def _ready_states(metrics_url: str) -> dict[str, str]:
    """Per-source states from the daemon's /readyz beside /metrics; {} when it has none or it cannot be read."""
    parts = urllib.parse.urlsplit(metrics_url)
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, READY_PATH, "", ""))
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310 - an operator's URL
            return parse_ready_states(response.read(MAX_BODY_BYTES))
    except urllib.error.HTTPError as exc:  # 503 (not ready) still says why; 404 is an older daemon
        return parse_ready_states(exc.read(MAX_BODY_BYTES))
    except (OSError, ValueError):
        return {}


def scrape(url: str, clock: Callable[[], float] = time.monotonic) -> Snapshot:
    """One snapshot of the daemon at `url`; StatusError with the reason when its /metrics cannot be read."""
    snapshot = parse_snapshot(_get(url).decode("utf-8", errors="replace"), clock())
    return dataclasses.replace(snapshot, states=_ready_states(url))


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
