"""`tweet-producer status`: a real Telemetry registry's /metrics parsed, rated, rendered, and served over HTTP."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest, start_http_server
from prometheus_client.core import Metric

from cli.status import CLEAR_SCREEN, MISSING, SINK_HEADER, SOURCE_HEADER, render, run_status, url_from_listen
from cli.status_model import Snapshot, StatusError, parse_ready_states, parse_snapshot, rates
from daemon.health import Health, MetricsServer
from daemon.telemetry import Telemetry
from daemon.telemetry_state import LagReading, SpoolReading
from tests.conftest import free_port

PROCESS_TIMEOUT_S = 60.0
SINK = "kinesis"
# Records the bumping collector adds to source "x" at every scrape, so two scrapes show a rate.
RECORDS_PER_SCRAPE = 10
ONCE_INTERVAL_S = 0.2
REPO = Path(__file__).resolve().parents[2]


def _telemetry() -> Telemetry:
    """A registry the way a running daemon fills it: one live source "x", one file source "file", one sink."""
    t = Telemetry(SINK)
    t.received_tally("x").add(40)
    t.received_tally("file").add(12)
    t.records_sent(Counter({"x": 30, "file": 10}), 40)
    for _ in range(3):
        t.record_dead_lettered("x", "x:1", "too_large", "over 1 MiB")
    t.records_kept(Counter({"file": 2}))
    t.source_connection("x", True, "stream open")
    t.source_reconnecting("x", "stall", 1.0, "no keep-alive")
    t.source_reconnecting("x", "network", 2.0, "reset")
    t.source_started("x", 1)
    t.source_started("file", 1)
    t.put_failed(code="ProvisionedThroughputExceededException", records=4, detail="slow down")
    t.put_failed(code="InternalFailure", records=1, detail="oops")
    t.records_retried(records=5, attempt=1, delay_s=0.1, reason="throttled")
    t.shard_throttled(shard_id="shardId-0", records=4)
    t.requests_in_flight(count=2)
    t.buffer_level(7, 7000)
    t.durability.watch_lag("file", lambda: LagReading(records=6, seconds=1.5))
    t.durability.watch_spool("x", lambda: SpoolReading(records=9, bytes=900, oldest_age_s=3.25))
    return t


def _row(text: str, name: str) -> list[str]:
    """The cells of the table row whose first cell is `name`."""
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, text
    return rows[0]


def _cell(text: str, name: str, header: list[str], column: str) -> str:
    return _row(text, name)[header.index(column)]


def test_parse_snapshot_reads_every_figure_of_a_real_registry() -> None:
    """Each per-source and per-sink figure bumped through the event functions is read back from the exposition."""
    snap = parse_snapshot(generate_latest(_telemetry().registry).decode(), taken_at=1.0)
    assert sorted(snap.sources) == ["file", "x"]
    assert sorted(snap.sinks) == [SINK]
    x, file = snap.sources["x"], snap.sources["file"]
    assert (x.connected, x.received, x.dead_lettered, x.kept, x.reconnects) == (1, 40, 3, 0, 2)
    assert (x.spool_records, x.spool_oldest_age_s, x.lag_records) == (9, 3.25, None)
    assert (file.connected, file.received, file.dead_lettered, file.kept, file.reconnects) == (None, 12, 0, 2, 0)
    assert (file.lag_records, file.lag_seconds, file.spool_records) == (6, 1.5, None)
    sink = snap.sinks[SINK]
    assert (sink.healthy, sink.sent, sink.put_errors, sink.in_flight, sink.retries, sink.throttles) == (1, 40, 5, 2, 5, 4)
    assert (sink.buffer_records, sink.buffer_bytes) == (7, 7000)
    assert snap.sources_running == 2


def test_metrics_an_older_daemon_lacks_are_missing_not_zero() -> None:
    """A family absent from the exposition reads as None (shown "-"), while an exposed empty family reads as 0."""
    text = "\n".join(
        line
        for line in generate_latest(_telemetry().registry).decode().splitlines()
        if "records_kept" not in line and "sink_requests_in_flight" not in line
    )
    snap = parse_snapshot(text + "\n", taken_at=1.0)
    assert snap.sources["file"].kept is None
    assert snap.sinks[SINK].in_flight is None
    assert snap.sources["file"].reconnects == 0  # exposed, no sample for "file"
    shown = render("u", snap, rates(snap, snap))
    assert _cell(shown, "file", SOURCE_HEADER, "KEPT") == MISSING
    assert _cell(shown, SINK, SINK_HEADER, "IN_FLIGHT") == MISSING


def test_rates_are_the_difference_over_the_time_between_snapshots() -> None:
    """records/s is (after - before) / seconds apart, per source and sink; a counter that went back is unknown."""
    t = _telemetry()
    before = parse_snapshot(generate_latest(t.registry).decode(), taken_at=10.0)
    t.received_tally("x").add(50)
    t.records_sent(Counter({"x": 20}), 20)
    after = parse_snapshot(generate_latest(t.registry).decode(), taken_at=12.5)
    r = rates(before, after)
    assert r.received == {"x": 20.0, "file": 0.0}
    assert r.sent == {SINK: 8.0}
    # A restarted daemon's counters start again from zero: no negative rate.
    restarted = Telemetry(SINK)
    restarted.received_tally("x").add(5)
    again = parse_snapshot(generate_latest(restarted.registry).decode(), taken_at=15.0)
    assert rates(after, again).received["x"] is None


def test_render_shows_each_source_and_sink_with_its_figures() -> None:
    """The rendered table has a row per source and sink, each figure under its column."""
    t = _telemetry()
    before = parse_snapshot(generate_latest(t.registry).decode(), taken_at=0.0)
    t.received_tally("x").add(8)
    after = parse_snapshot(generate_latest(t.registry).decode(), taken_at=2.0)
    shown = render("http://h/metrics", after, rates(before, after))
    x = dict(zip(SOURCE_HEADER, _row(shown, "x"), strict=True))
    assert x == {
        "SOURCE": "x",
        "STATE": "connected",
        "REC/S": "4.0",
        "RECEIVED": "48",
        "DEAD": "3",
        "KEPT": "0",
        "RECONN": "2",
        "RESTARTS": "0",
        "LAG": MISSING,
        "LAG_S": MISSING,
        "SPOOL": "9",
        "SPOOL_AGE_S": "3.2",
    }
    file = dict(zip(SOURCE_HEADER, _row(shown, "file"), strict=True))
    assert (file["STATE"], file["REC/S"], file["RECEIVED"], file["KEPT"], file["LAG"], file["LAG_S"]) == (
        "idle",
        "0.0",
        "12",
        "2",
        "6",
        "1.5",
    )
    t.received_tally("file").add(1)
    moved = parse_snapshot(generate_latest(t.registry).decode(), taken_at=3.0)
    assert _cell(render("u", moved, rates(after, moved)), "file", SOURCE_HEADER, "STATE") == "active"
    sink = dict(zip(SINK_HEADER, _row(shown, SINK), strict=True))
    assert sink == {
        "SINK": SINK,
        "HEALTHY": "yes",
        "SENT/S": "0.0",
        "SENT": "40",
        "PUT_ERR": "5",
        "IN_FLIGHT": "2",
        "BUF_REC": "7",
        "BUF_BYTES": "7000",
        "RETRIES": "5",
        "THROTTLES": "4",
    }
    t.sink_health(healthy=False, reason="ResourceNotFoundException", detail="no stream")
    t.source_connection("x", False, "reset")
    unhealthy = parse_snapshot(generate_latest(t.registry).decode(), taken_at=3.0)
    shown = render("u", unhealthy, rates(after, unhealthy))
    assert _cell(shown, SINK, SINK_HEADER, "HEALTHY") == "NO"
    assert _cell(shown, "x", SOURCE_HEADER, "STATE") == "disconnected"


class _Bump:
    """Adds RECORDS_PER_SCRAPE to source "x" after each scrape read it (registered after the received collector)."""

    def __init__(self, t: Telemetry) -> None:
        self.t = t

    def collect(self) -> Iterator[Metric]:
        self.t.received_tally("x").add(RECORDS_PER_SCRAPE)
        return iter(())


@pytest.fixture
def served() -> Iterator[str]:
    """The /metrics URL of a real HTTP server on 127.0.0.1 exposing the filled registry."""
    t = _telemetry()
    t.registry.register(_Bump(t))  # type: ignore[arg-type]
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=t.registry)
    yield f"http://127.0.0.1:{port}/metrics"
    server.shutdown()
    thread.join()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "status", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )


def test_once_against_a_real_daemon_endpoint_prints_sources_and_exits_0(served: str) -> None:
    """`status --once` as a process scrapes a real HTTP endpoint twice, prints every source and sink and a rate, exit 0."""
    done = _cli("--url", served, "--once", "--interval", str(ONCE_INTERVAL_S))
    assert done.returncode == 0, done.stderr
    assert CLEAR_SCREEN not in done.stdout
    assert _cell(done.stdout, "x", SOURCE_HEADER, "STATE") == "connected"
    assert _cell(done.stdout, "file", SOURCE_HEADER, "RECEIVED") == "12"
    assert _cell(done.stdout, SINK, SINK_HEADER, "SENT") == "40"
    # A scrape reads /metrics, then /readyz, which this server (like a daemon older than /readyz) answers with
    # the metrics too: two collections, so 2 x RECORDS_PER_SCRAPE between the reads, ONCE_INTERVAL_S or more apart.
    assert _cell(done.stdout, "file", SOURCE_HEADER, "STATE") == "idle"
    rate = float(_cell(done.stdout, "x", SOURCE_HEADER, "REC/S"))
    assert 0 < rate <= 2 * RECORDS_PER_SCRAPE / ONCE_INTERVAL_S


def test_unreachable_url_exits_1_with_one_line_naming_it() -> None:
    """Nothing listening: exit 1 and a single stderr line with the URL and the error, no traceback."""
    url = f"http://127.0.0.1:{free_port()}/metrics"
    done = _cli("--url", url, "--once", "--interval", "0.1")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert url in lines[0] and "refused" in lines[0].lower()
    assert done.stdout == ""


def test_url_comes_from_the_configs_metrics_listen(tmp_path: Path) -> None:
    """With -c, the URL is the config's metrics.listen (a bind-all host scraped on the loopback)."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        "sources:\n  - name: s\n    type: file\n    paths: [in.jsonl]\nsink:\n  type: kinesis\n"
        f"metrics:\n  listen: 0.0.0.0:{port}\n"
    )
    done = _cli("-c", str(config), "--once", "--interval", "0.1")
    assert done.returncode == 1
    assert f"http://127.0.0.1:{port}/metrics" in done.stderr
    assert url_from_listen("[::]:9477") == "http://[::1]:9477/metrics"


def test_live_view_redraws_until_ctrl_c_and_exits_0(served: str) -> None:
    """Without --once the view is cleared and redrawn every interval; Ctrl-C (KeyboardInterrupt) ends it with 0."""
    out = io.StringIO()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 4:
            raise KeyboardInterrupt

    assert run_status(served, once=False, interval_s=0.5, out=out, sleep=sleep) == 0
    frames = out.getvalue().split(CLEAR_SCREEN)[1:]
    assert len(frames) == 3
    received = [int(_cell(frame, "x", SOURCE_HEADER, "RECEIVED")) for frame in frames]
    assert received == sorted(received) and received[-1] > received[0]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_a_snapshot_or_a_status_error(text: str) -> None:
    """Whatever a server answers, parsing ends in a Snapshot or a StatusError, never another exception."""
    with contextlib.suppress(StatusError):
        assert isinstance(parse_snapshot(text, 0.0), Snapshot)


def test_live_view_says_when_the_daemon_goes_away_and_keeps_trying() -> None:
    """A scrape failing mid-view keeps the last figures on screen under a line naming the URL and the error."""
    t = _telemetry()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=t.registry)
    url = f"http://127.0.0.1:{port}/metrics"
    out = io.StringIO()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:  # after the first frame: the daemon stops
            server.shutdown()
            server.server_close()
            thread.join()
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    assert run_status(url, once=False, interval_s=0.5, out=out, sleep=sleep) == 0
    frames = out.getvalue().split(CLEAR_SCREEN)[1:]
    assert len(frames) == 2
    assert f"cannot read {url}" not in frames[0]
    assert _cell(frames[1], "x", SOURCE_HEADER, "RECEIVED") == "40"
    assert f"cannot read {url}: " in frames[1] and "refused" in frames[1].lower()


@dataclass
class _Supervisor:
    thread: threading.Thread
    ended_cleanly: threading.Event


def test_source_states_come_from_the_daemons_readyz() -> None:
    """Against the daemon's own metrics server, STATE is what /readyz reports: finished, connected, running."""
    t = _telemetry()
    t.received_tally("tail").add(1)
    stop = threading.Event()
    alive = threading.Thread(target=stop.wait)
    done_thread = threading.Thread(target=lambda: None)
    alive.start()
    done_thread.start()
    done_thread.join()
    finished = threading.Event()
    finished.set()
    health = Health(lambda: {"x": True})
    health.attach(
        alive,
        [
            ("x", _Supervisor(alive, threading.Event())),
            ("file", _Supervisor(done_thread, finished)),
            ("tail", _Supervisor(alive, threading.Event())),
        ],
        sink_unhealthy=lambda: None,
        fatal=list,
    )
    health.tick()
    health.state = "serving"
    server = MetricsServer("127.0.0.1", 0, t.registry, health)
    try:
        out = io.StringIO()
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert run_status(url, once=True, interval_s=0.1, out=out, sleep=lambda seconds: None) == 0
    finally:
        server.shutdown()
        stop.set()
        alive.join()
    shown = out.getvalue()
    states = {name: _cell(shown, name, SOURCE_HEADER, "STATE") for name in ("x", "file", "tail")}
    assert states == {"x": "connected", "file": "finished", "tail": "running"}
    assert parse_ready_states(b"# HELP not json\n") == {}


def test_the_header_says_when_the_last_reload_was_refused() -> None:
    """Nothing about reloads before the first; after a refused one the header says so; a good one clears it."""
    telemetry = _telemetry()
    before = parse_snapshot(generate_latest(telemetry.registry).decode(), taken_at=1.0)
    assert "config:" not in render("u", before, rates(before, before)).splitlines()[0]
    telemetry.reloads.failed("invalid", "config.yaml", problems=["config.yaml:3: sink: unknown key"])
    refused = parse_snapshot(generate_latest(telemetry.registry).decode(), taken_at=2.0)
    assert "LAST RELOAD REFUSED (1 reloads" in render("u", refused, rates(before, refused)).splitlines()[0]
    telemetry.reloads.succeeded("config.yaml", 0.1, started=[], stopped=[], restarted=[], unchanged=["x"])
    applied = parse_snapshot(generate_latest(telemetry.registry).decode(), taken_at=3.0)
    assert render("u", applied, rates(refused, applied)).splitlines()[0].endswith("config: reloaded (2 reloads)")
