"""systemd's notify protocol: READY, STATUS, WATCHDOG and STOPPING datagrams on $NOTIFY_SOCKET, watchdog pings
only while the main loop and the sink side make progress (real daemons: test_notify_daemon.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.notify import Notifier, WatchdogGate


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
