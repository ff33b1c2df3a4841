"""systemd's notify protocol: READY, STATUS, WATCHDOG and STOPPING datagrams on $NOTIFY_SOCKET, watchdog pings
only while the main loop and the sink side make progress - through a real daemon and a real socket too."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.notify import Notifier, WatchdogGate
from tests.conftest import poll_until
from tests.daemon.test_kinesis_delivery import DUMMY_AWS, START_TIMEOUT_S, config_body, tweet_lines, write_lines
from tests.fake_kinesis import FakeKinesis

WAIT_S = 30.0


class NotifySocket:
    """A datagram socket standing in for systemd's: keeps every message it receives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except TimeoutError:
                return self.messages

    def lines(self) -> list[str]:
        return [line for message in self.drain() for line in message.splitlines()]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.close()


def test_notifier_sends_each_message_as_one_datagram(notify_socket: NotifySocket) -> None:
    """READY and STATUS in one datagram, as systemd reads them; the watchdog interval is half WATCHDOG_USEC."""
    notifier = Notifier({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "3000000"})
    assert notifier.enabled and notifier.watchdog_interval_s == 1.5
    notifier.send("READY=1", "STATUS=received 0")
    notifier.close()
    assert notify_socket.drain() == ["READY=1\nSTATUS=received 0"]


def test_without_systemd_or_for_another_pid_nothing_is_sent() -> None:
    """No NOTIFY_SOCKET: sending does nothing; a WATCHDOG_PID of another process: no watchdog for us."""
    assert not Notifier({}).enabled
    Notifier({}).send("READY=1")
    other_pid = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(other_pid).watchdog_interval_s is None
    Notifier({"NOTIFY_SOCKET": "/nonexistent/socket"}).send("READY=1")  # unreachable: swallowed


def test_the_watchdog_pings_only_while_the_main_loop_and_the_sink_side_move() -> None:
    """Pings come every interval while all moves; a stalled main loop stops them; a wedged worker stops them
    unless its sink keeps completing requests (an outage: waiting, not hung)."""
    now = [0.0]
    worker = [0.0]
    sink = [float("-inf")]
    gate = WatchdogGate(1.0, lambda: worker[0], lambda: sink[0], clock=lambda: now[0])
    assert gate.due(main_loop_at=0.0)
    now[0] = 0.5
    assert not gate.due(main_loop_at=0.5)  # not yet an interval since the last ping
    now[0] = worker[0] = 1.0
    assert gate.due(main_loop_at=1.0)
    now[0] = 6.0  # the worker's loop stopped at 1.0 and the sink completed nothing: hung
    assert not gate.due(main_loop_at=6.0)
    sink[0] = 5.9  # the worker waits in submit while the sink retries: alive
    assert gate.due(main_loop_at=6.0)
    now[0] = worker[0] = sink[0] = 12.0
    assert not gate.due(main_loop_at=6.5), "a main loop stalled for 5.5 s (4 intervals) still got a ping"


@pytest.mark.slow
def test_a_real_daemon_says_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path, daemon_factory: Any, notify_socket: NotifySocket
) -> None:
    """Started under a fake systemd: READY=1 with a STATUS once it serves, WATCHDOG=1 about every half
    WATCHDOG_USEC while it runs, STOPPING=1 on SIGTERM."""
    with FakeKinesis(1, seed=18) as fake:
        replay = write_lines(tmp_path / "tweets.jsonl", tweet_lines(2000))
        body = config_body(replay, fake, rate=500)
        env = {**DUMMY_AWS, "NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000"}
        daemon = daemon_factory(body, embedded=False).start(env)
        poll_until(lambda: "READY=1" in notify_socket.lines(), START_TIMEOUT_S, "READY=1")
        started = time.monotonic()
        poll_until(lambda: notify_socket.lines().count("WATCHDOG=1") >= 3, WAIT_S, "three watchdog pings")
        assert time.monotonic() - started < WAIT_S
        lines = notify_socket.lines()
        assert lines.index("READY=1") < lines.index("WATCHDOG=1")
        assert any(line.startswith("STATUS=") and "received" in line for line in lines)
        assert daemon.stop(signal.SIGTERM, timeout=WAIT_S) == 0
        poll_until(lambda: "STOPPING=1" in notify_socket.lines(), WAIT_S, "STOPPING=1")
