"""systemd's notify protocol, spoken directly: one datagram per state change to `$NOTIFY_SOCKET` (sd_notify(3)).

`READY=1` once the sink was checked and the sources run, `STATUS=` with live figures, `STOPPING=1` at shutdown,
and `WATCHDOG=1` every half `$WATCHDOG_USEC` - but only while the main loop and the sink worker make progress
(`WatchdogGate`), so a hung daemon is restarted by systemd (`WatchdogSec=` in the unit). Without
`$NOTIFY_SOCKET` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

# How often STATUS= is refreshed: systemctl status shows it; more often is noise.
STATUS_INTERVAL_S = 5.0


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # an abstract socket: a leading NUL byte
            address = "\0" + address[1:]
        self._address = address or None
        watchdog_usec = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        for_us = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_interval_s = int(watchdog_usec) / 2_000_000 if watchdog_usec.isdigit() and for_us else None
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *assignments: str) -> None:
        """Send `KEY=value` lines in one datagram; a failure to reach systemd must never stop the daemon."""
        if self._address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(assignments).encode(), self._address)
        except OSError:
            return

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class WatchdogGate:
    """Decides when a WATCHDOG=1 is due: every `interval_s`, and only while both the main loop and the sink
    side moved within `stall_s` - the worker's loop, or a request the sink completed (a worker blocked in
    `submit` during an outage is waiting, not hung, while its sink keeps retrying)."""

    def __init__(
        self,
        interval_s: float,
        worker_heartbeat: Callable[[], float],
        sink_activity: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        # A part that did not move for four ping intervals (two watchdog periods) is taken as hung.
        self.stall_s = 4 * interval_s
        self._worker_heartbeat = worker_heartbeat
        self._sink_activity = sink_activity
        self._clock = clock
        self._last_ping = float("-inf")

    def due(self, main_loop_at: float) -> bool:
        now = self._clock()
        if now - self._last_ping < self.interval_s:
            return False
        sink_side = max(self._worker_heartbeat(), self._sink_activity())
        if now - main_loop_at > self.stall_s or now - sink_side > self.stall_s:
            return False
        self._last_ping = now
        return True
