"""Fixtures shared by every test folder: free loopback ports and a running daemon process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from moto.server import ThreadedMotoServer

from embedded.endpoint import EmbeddedEndpoint

REPO = Path(__file__).resolve().parents[1]
# How often a test looks again while it waits for an outcome (always against a deadline).
POLL_INTERVAL_S = 0.1
T = TypeVar("T")
# The events that end a hot reload (SIGHUP), whatever its result, and how long one may take on a loaded machine
# (a changed source settles its records, a sink change drains the buffer and checks the new stream first).
RELOAD_OUTCOMES = ("config_reloaded", "config_reload_failed")
RELOAD_TIMEOUT_S = 60.0


def poll_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = POLL_INTERVAL_S) -> T:
    """Call `check` until it returns something truthy (returned), failing with `what` after `timeout` seconds."""
    give_up = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def table_items(config: Path, cwd: Path, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The EventData items as `tweet-producer table --json` prints them (a real CLI process); `env` adds
    variables the config names (e.g. a source's token)."""
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "table", "-c", str(config), "--json"],
        cwd=cwd,
        capture_output=True,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"} | (env or {}),
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)
    return items


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class DaemonProcess:
    """A real `tweet-producer run` process, with its JSON-lines log collected from stdout."""

    config_path: Path
    embedded_port: int
    metrics_port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    log_lines: list[dict[str, Any]] = field(default_factory=list)

    def start(self, extra_env: dict[str, str] | None = None) -> DaemonProcess:
        """Run the daemon without the tester's AWS_* variables (plus `extra_env`)."""
        self.stdout_path = self.workdir / "daemon.log"
        self._stdout = self.stdout_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "run", "-c", str(self.config_path)],
            cwd=self.workdir,
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            env=env | {"PYTHONPATH": str(REPO)} | (extra_env or {}),
        )
        return self

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.stdout_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"event": "(not json)", "raw": raw})
        return lines

    def wait_for_event(self, name: str, timeout: float) -> dict[str, Any]:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            for entry in self.logs():
                if entry.get("event") == name:
                    return entry
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.returncode}) before {name}:\n{self.stdout_path.read_text()}")
            time.sleep(POLL_INTERVAL_S)
        raise AssertionError(f"no {name} event within {timeout}s:\n{self.stdout_path.read_text()[-5000:]}")

    def metrics(self) -> dict[str, float]:
        """Prometheus samples by `name{labels}`."""
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        samples = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every logged event called `name`, in log order."""
        return [entry for entry in self.logs() if entry.get("event") == name]

    def reload(self, timeout: float = RELOAD_TIMEOUT_S) -> dict[str, Any]:
        """SIGHUP (a hot reload of the config file), then that reload's outcome: the next `config_reloaded` or
        `config_reload_failed` event."""
        assert self.process is not None
        before = len(self._reload_outcomes())
        self.process.send_signal(signal.SIGHUP)

        def outcome() -> dict[str, Any] | None:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = self.stdout_path.read_text()[-5000:]
                raise AssertionError(f"daemon exited ({self.process.returncode}) during a reload:\n{tail}")
            outcomes = self._reload_outcomes()
            return outcomes[before] if len(outcomes) > before else None

        return poll_until(outcome, timeout, "the reload's config_reloaded or config_reload_failed event")

    def _reload_outcomes(self) -> list[dict[str, Any]]:
        return [entry for entry in self.logs() if entry.get("event") in RELOAD_OUTCOMES]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._stdout.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Any]:
    """Builds daemons from a config body (the embedded and metrics addresses are filled in)."""
    started: list[DaemonProcess] = []

    def make(body: str, embedded: bool = True) -> DaemonProcess:
        """`embedded=False` turns the daemon's own embedded stack off (the sink section says where to send)."""
        embedded_port, metrics_port = free_port(), free_port()
        config = tmp_path / "config.yaml"
        embedded_section = f"  listen: 127.0.0.1:{embedded_port}\n" if embedded else "  enabled: false\n"
        config.write_text(
            body + f"\nembedded:\n{embedded_section}metrics:\n  listen: 127.0.0.1:{metrics_port}\nlog:\n  format: json\n",
            encoding="utf-8",
        )
        daemon = DaemonProcess(config, embedded_port, metrics_port, tmp_path)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.kill()


@pytest.fixture
def embedded_endpoint() -> Iterator[EmbeddedEndpoint]:
    """The embedded stack's endpoint (moto's server) on a free loopback port."""
    server = EmbeddedEndpoint("127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's own server on a free loopback port, shared by the session (tests use unique resource names)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
