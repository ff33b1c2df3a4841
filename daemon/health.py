"""`/healthz` and `/readyz` beside `/metrics`, on the metrics port: whether the daemon is alive, and whether it
is ready to deliver - each a JSON body saying why, with 200 or 503.

- `/healthz` (liveness: restart me if this fails): the main loop ticked within MAIN_LOOP_STALL_S, and the sink
  worker thread is alive, and no part of the daemon failed fatally.
- `/readyz` (readiness: route work here): alive, serving (start-up done, not stopping), the sink healthy (its
  destination takes writes), and every source running without a reported disconnection, or finished.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
# The main loop wakes every 0.5 s; this many seconds without a tick means it hangs.
MAIN_LOOP_STALL_S = 10.0


class _Thread(Protocol):
    def is_alive(self) -> bool: ...


class _Supervisor(Protocol):
    @property
    def thread(self) -> threading.Thread: ...

    @property
    def ended_cleanly(self) -> threading.Event: ...


class Health:
    """What the endpoints report, fed by the daemon as it starts, serves and stops."""

    def __init__(self, connected: Callable[[], dict[str, bool]], clock: Callable[[], float] = time.monotonic) -> None:
        self._connected = connected  # per live source, its last reported connection state
        self._clock = clock
        self._last_tick: float | None = None
        self._worker: _Thread | None = None
        self._supervisors: dict[str, _Supervisor] = {}
        self._sink_unhealthy: Callable[[], str | None] = lambda: None
        self._fatal: Callable[[], list[str]] = list
        self.state = "starting"  # starting | serving | reloading (still serving) | stopping

    def attach(
        self,
        worker: _Thread,
        supervisors: Iterable[tuple[str, _Supervisor]],
        sink_unhealthy: Callable[[], str | None],
        fatal: Callable[[], list[str]],
    ) -> None:
        self._worker = worker
        self._supervisors = dict(supervisors)
        self._sink_unhealthy = sink_unhealthy
        self._fatal = fatal

    def set_sources(self, supervisors: Iterable[tuple[str, _Supervisor]]) -> None:
        """A reload changed the running sources."""
        self._supervisors = dict(supervisors)

    def tick(self) -> None:
        """The main loop made a round."""
        self._last_tick = self._clock()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        if self._last_tick is None:
            checks["main_loop"] = {"ok": self.state == "starting", "detail": "not started yet"}
        else:
            since = self._clock() - self._last_tick
            checks["main_loop"] = {"ok": since <= MAIN_LOOP_STALL_S, "last_tick_s_ago": round(since, 3)}
        worker_alive = self._worker is not None and self._worker.is_alive()
        # Before serving the worker is not started yet; from then on it must run until the daemon stops.
        checks["sink_worker"] = {"ok": worker_alive or self.state == "starting", "alive": worker_alive}
        failed = self._fatal()
        checks["fatal"] = {"ok": not failed, "components": failed}
        return all(check["ok"] for check in checks.values()), {"status": self.state, "checks": checks}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        alive, report = self.liveness()
        unhealthy = self._sink_unhealthy()
        connected = self._connected()
        sources: dict[str, Any] = {}
        for name, supervisor in self._supervisors.items():
            if not supervisor.thread.is_alive():
                finished = supervisor.ended_cleanly.is_set()
                sources[name] = {"ok": finished, "state": "finished" if finished else "not running"}
            elif connected.get(name) is False:
                sources[name] = {"ok": False, "state": "disconnected"}
            else:
                sources[name] = {"ok": True, "state": "connected" if connected.get(name) else "running"}
        checks: dict[str, dict[str, Any]] = {
            "alive": {"ok": alive},
            "serving": {"ok": self.state in ("serving", "reloading"), "state": self.state},
            "sink": {"ok": unhealthy is None, "unhealthy_reason": unhealthy},
            "sources": {"ok": all(s["ok"] for s in sources.values()), "each": sources},
        }
        ready = all(check["ok"] for check in checks.values())
        return ready, {"status": "ready" if ready else "not_ready", "checks": checks, "liveness": report["checks"]}


class MetricsServer:
    """The metrics port: Prometheus's exposition on every path but the two health endpoints."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        metrics = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            path = environ.get("PATH_INFO", "")
            if path in (HEALTH_PATH, READY_PATH):
                ok, body = health.liveness() if path == HEALTH_PATH else health.readiness()
                payload = json.dumps(body).encode()
                # A new header list per answer: the server appends to the one it is given.
                headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
                start_response("200 OK" if ok else "503 Service Unavailable", headers)
                return [payload]
            return metrics(environ, start_response)  # type: ignore[no-any-return]

        server_class = _server_class(host)
        self._server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-server", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _server_class(host: str) -> type[ThreadingWSGIServer]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingWSGIServer):
        address_family = family

    return Server


class _QuietHandler(WSGIRequestHandler):
    """Scrapes and probes come every few seconds: they are not log events."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        return None
