"""systemd's notify protocol through real daemon processes on a real datagram socket: READY, WATCHDOG and
STOPPING; a sink worker wedged for real stops the watchdog pings while the main loop still runs (beside a
healthy daemon that keeps pinging over the same span); a SIGHUP reload says RELOADING then READY."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, DaemonProcess, free_port, poll_until
from tests.daemon.test_kinesis_delivery import DUMMY_AWS, START_TIMEOUT_S, config_body, tweet_lines, write_lines
from tests.daemon.test_notify import NotifySocket
from tests.fake_kinesis import FakeKinesis
from tests.fakes import TEST_SINKS_RUNNER

WAIT_S = 30.0
WATCHDOG = "WATCHDOG=1"
# WATCHDOG_USEC of 1 s: a ping is due every 0.5 s, and a part still for 2 s (four intervals) is hung.
WATCHDOG_USEC = 1_000_000
PING_INTERVAL_S = WATCHDOG_USEC / 2_000_000
STALL_S = 4 * PING_INTERVAL_S
# After the wedge: the gate notices within STALL_S of the worker's last turn, plus a main-loop tick (0.5 s).
STALL_NOTICED_S = STALL_S + 1.0
# The span watched for silence: four stall periods, longer than the 5 s STATUS= refresh (daemon/notify.py).
QUIET_SPAN_S = 4 * STALL_S
# Lines per second the file source replays; the wedging sink takes this many records before it wedges.
RATE = 200
WEDGE_AFTER = 600  # 3 s of flow: the first pings come well before it
# The healthy daemon must still have lines to send when the quiet span ends (its start, the flow before the
# wedge, the stall and the span take about 15 s at RATE; this leaves it room on a slow machine).
REPLAY_LINES = 8000


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.close()


def notify_env(listener: NotifySocket) -> dict[str, str]:
    return {**DUMMY_AWS, "NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}


class TestSinkDaemon(DaemonProcess):
    """A real `tweet-producer run` with the test sinks (tests/fakes.py) registered, in a directory of its own."""

    __test__ = False  # a helper, not a test class

    def start(self, extra_env: dict[str, str] | None = None) -> TestSinkDaemon:
        self.stdout_path = self.workdir / "daemon.log"
        self._stdout = self.stdout_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", TEST_SINKS_RUNNER, "run", "-c", str(self.config_path)],
            cwd=self.workdir,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            env=env | {"PYTHONPATH": str(REPO)} | (extra_env or {}),
        )
        return self


def wedging_daemon(workdir: Path, replay: Path, wedge_after: int | None) -> TestSinkDaemon:
    """A daemon replaying `replay` at RATE into the wedging sink, which lands records in workdir/landed.jsonl."""
    workdir.mkdir()
    metrics_port = free_port()
    wedge = "" if wedge_after is None else f"  wedge_after: {wedge_after}\n"
    config = workdir / "config.yaml"
    config.write_text(
        f"""
sources:
  - name: replay
    type: file
    paths: ["{replay}"]
    rate: {RATE}
    checkpoint: false
sink:
  type: wedging
  landed: {workdir / "landed.jsonl"}
{wedge}dead_letter:
  path: dead.jsonl
embedded:
  enabled: false
metrics:
  listen: 127.0.0.1:{metrics_port}
log:
  format: json
""",
        encoding="utf-8",
    )
    return TestSinkDaemon(config, 0, metrics_port, workdir)


def watch(seconds: float, *listeners: NotifySocket) -> None:
    """Collect what the sockets receive for `seconds`: the span a test proves something did not happen in."""
    until = time.monotonic() + seconds
    poll_until(lambda: [s.drain() for s in listeners] and time.monotonic() >= until, seconds + WAIT_S, f"{seconds} s")


def landed(daemon: DaemonProcess) -> list[bytes]:
    path = daemon.workdir / "landed.jsonl"
    return path.read_bytes().splitlines() if path.exists() else []


def healthz(daemon: DaemonProcess) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/healthz", timeout=5) as answer:
        body: dict[str, Any] = json.loads(answer.read())
        return answer.status, body


@pytest.mark.slow
def test_a_real_daemon_says_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, daemon_factory: Any, notify_socket: NotifySocket
) -> None:
    """Started under a fake systemd: READY=1 with a STATUS once it serves, WATCHDOG=1 about every half
    WATCHDOG_USEC while it runs, STOPPING=1 on SIGTERM."""
    with FakeKinesis(1, seed=18) as fake:
        replay = write_lines(tmp_path / "tweets.jsonl", tweet_lines(2000))
        body = config_body(replay, fake, rate=500)
        daemon = daemon_factory(body, embedded=False).start(notify_env(notify_socket))
        poll_until(lambda: "READY=1" in notify_socket.lines(), START_TIMEOUT_S, "READY=1")
        started = time.monotonic()
        poll_until(lambda: notify_socket.lines().count(WATCHDOG) >= 3, WAIT_S, "three watchdog pings")
        assert time.monotonic() - started < WAIT_S
        lines = notify_socket.lines()
        assert lines.index("READY=1") < lines.index(WATCHDOG)
        assert any(line.startswith("STATUS=") and "received" in line for line in lines)
        assert daemon.stop(signal.SIGTERM, timeout=WAIT_S) == 0
        poll_until(lambda: "STOPPING=1" in notify_socket.lines(), WAIT_S, "STOPPING=1")


@pytest.mark.slow
def test_a_wedged_sink_worker_stops_the_watchdog_pings_while_a_healthy_one_keeps_them(tmp_path: Path) -> None:
    """Pings arrive while records flow; once the sink's submit blocks for good they stop for four stall periods
    while the main loop still answers /healthz and refreshes STATUS=; a healthy daemon pings all along."""
    lines = tweet_lines(REPLAY_LINES)
    replay = write_lines(tmp_path / "tweets.jsonl", lines)
    wedged_socket, healthy_socket = NotifySocket(tmp_path / "wedged.sock"), NotifySocket(tmp_path / "healthy.sock")
    wedged = wedging_daemon(tmp_path / "wedged", replay, WEDGE_AFTER)
    healthy = wedging_daemon(tmp_path / "healthy", replay, None)
    try:
        wedged.start(notify_env(wedged_socket))
        healthy.start(notify_env(healthy_socket))
        poll_until(lambda: "READY=1" in wedged_socket.lines(), START_TIMEOUT_S, "READY=1")

        # While records flow (some landed, the wedge not reached yet) the wedging daemon pings like any other.
        poll_until(lambda: wedged_socket.lines().count(WATCHDOG) >= 2, WAIT_S, "two pings while records flow")
        assert 0 < len(landed(wedged)) < WEDGE_AFTER, "the pings came before any record landed, or after the wedge"
        poll_until(lambda: "READY=1" in healthy_socket.lines(), START_TIMEOUT_S, "READY=1 from the healthy daemon")

        poll_until(lambda: len(landed(wedged)) >= WEDGE_AFTER, WAIT_S, "the wedging sink to take its records")
        watch(STALL_NOTICED_S, wedged_socket, healthy_socket)  # pings may still come until the stall shows

        before = {name: len(s.lines()) for name, s in (("wedged", wedged_socket), ("healthy", healthy_socket))}
        healthy_landed_before = len(landed(healthy))
        watch(QUIET_SPAN_S, wedged_socket, healthy_socket)
        wedged_span = wedged_socket.lines()[before["wedged"] :]
        healthy_span = healthy_socket.lines()[before["healthy"] :]

        assert WATCHDOG not in wedged_span, f"a wedged worker still got pings: {wedged_span}"
        # The main loop still runs: it refreshed STATUS= during the span and answers /healthz (the worker thread
        # is alive, only stuck: liveness cannot see it, the watchdog does).
        assert any(line.startswith("STATUS=") for line in wedged_span), wedged_span
        status, body = healthz(wedged)
        assert status == 200 and body["checks"]["main_loop"]["ok"], body
        assert wedged.process is not None and wedged.process.poll() is None
        # Exactly what the sink took landed, each line once: nothing moved since the wedge.
        assert sorted(landed(wedged)) == sorted(lines[:WEDGE_AFTER])

        # The control: the same setup with a sink that never wedges pinged through the same span (one ping
        # every 0.5 s would be 16; half of that leaves room for a loaded machine) and kept delivering.
        assert healthy_span.count(WATCHDOG) >= QUIET_SPAN_S / PING_INTERVAL_S / 2, healthy_span
        assert len(landed(healthy)) > healthy_landed_before
        assert healthy.stop(signal.SIGTERM, timeout=WAIT_S) == 0
        delivered = landed(healthy)
        assert len(set(delivered)) == len(delivered) and set(delivered) <= set(lines)
    finally:
        # The wedged daemon cannot flush (its worker never returns): SIGKILL, as systemd's watchdog would.
        wedged.kill()
        healthy.kill()
        wedged_socket.close()
        healthy_socket.close()
    assert wedged.process is not None and wedged.process.returncode == -signal.SIGKILL


def reload_datagrams(listener: NotifySocket, since: int) -> tuple[list[str], list[str]] | None:
    """After datagram `since`: the first one saying RELOADING=1 (its lines) and the first READY=1 after it, or
    None while either is missing."""
    messages = [m.splitlines() for m in listener.drain()[since:]]
    reloading = next((i for i, lines in enumerate(messages) if "RELOADING=1" in lines), None)
    if reloading is None:
        return None
    ready = next((lines for lines in messages[reloading + 1 :] if "READY=1" in lines), None)
    return None if ready is None else (messages[reloading], ready)


def hup_and_watch(daemon: DaemonProcess, listener: NotifySocket, event: str) -> tuple[list[str], list[str]]:
    """SIGHUP the daemon; once READY=1 followed RELOADING=1 on the socket, `event` must be logged already (the
    daemon says READY after it). Checks the RELOADING datagram's MONOTONIC_USEC falls between the signal and
    its arrival (CLOCK_MONOTONIC is the machine's, the same in both processes)."""
    assert daemon.process is not None
    since = len(listener.drain())
    signalled_us = time.monotonic_ns() // 1000
    daemon.process.send_signal(signal.SIGHUP)
    reloading, ready = poll_until(lambda: reload_datagrams(listener, since), WAIT_S, "RELOADING=1 then READY=1")
    received_us = time.monotonic_ns() // 1000
    assert event in [entry.get("event") for entry in daemon.logs()], f"READY=1 came before {event} was logged"
    assert reloading[0] == "RELOADING=1" and len(reloading) == 3, reloading
    monotonic = [line.removeprefix("MONOTONIC_USEC=") for line in reloading if line.startswith("MONOTONIC_USEC=")]
    assert len(monotonic) == 1 and monotonic[0].isdigit(), reloading
    assert signalled_us <= int(monotonic[0]) <= received_us, (signalled_us, monotonic, received_us)
    assert any(line.startswith("STATUS=reloading") for line in reloading), reloading
    assert any(line.startswith("STATUS=") for line in ready), ready
    return reloading, ready


@pytest.mark.slow
def test_a_reload_says_reloading_then_ready_and_an_invalid_one_ends_ready_too(
    tmp_path: Path, daemon_factory: Any, notify_socket: NotifySocket
) -> None:
    """SIGHUP: RELOADING=1, MONOTONIC_USEC and STATUS in one datagram, READY=1 once config_reloaded was logged; a file
    that does not load: the same pair around config_reload_failed, then pings go on and the old config delivers
    every line once."""
    with FakeKinesis(1, seed=19) as fake:
        lines = tweet_lines(3000)
        replay = write_lines(tmp_path / "tweets.jsonl", lines)
        daemon = daemon_factory(config_body(replay, fake, rate=500), embedded=False).start(notify_env(notify_socket))
        poll_until(lambda: "READY=1" in notify_socket.lines(), START_TIMEOUT_S, "READY=1")
        original = daemon.config_path.read_text(encoding="utf-8")
        assert "flush_deadline: 10.0s" in original and "rate: 500" in original

        # A change that applies without restarting anything.
        daemon.config_path.write_text(original.replace("flush_deadline: 10.0s", "flush_deadline: 9s"), encoding="utf-8")
        hup_and_watch(daemon, notify_socket, "config_reloaded")
        assert daemon.wait_for_event("config_reloaded", WAIT_S)["result"] == "success"

        daemon.config_path.write_text(original.replace("rate: 500", "rate: fast"), encoding="utf-8")
        hup_and_watch(daemon, notify_socket, "config_reload_failed")
        failed = daemon.wait_for_event("config_reload_failed", WAIT_S)
        assert failed["result"] == "invalid" and any("rate" in problem for problem in failed["problems"]), failed
        after = len(notify_socket.drain())
        poll_until(lambda: notify_socket.lines()[after:].count(WATCHDOG) >= 2, WAIT_S, "pings after the refused reload")

        # The old config kept running: every line lands, once.
        assert fake.wait_until(lambda f: sum(f.data_counts().values()) >= len(lines), WAIT_S), "lines missing"
        assert daemon.stop(signal.SIGTERM, timeout=WAIT_S) == 0
        assert fake.data_counts() == Counter(lines)
        poll_until(lambda: "STOPPING=1" in notify_socket.lines(), WAIT_S, "STOPPING=1")
