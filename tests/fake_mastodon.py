"""A fake Mastodon server on 127.0.0.1: the instance API, the SSE streaming endpoints and the public timeline.

Each streaming request takes the next `Plan` from a queue (scripted per test): an HTTP error answer, or a
200 `text/event-stream` body written in chunks, with pauses, ending cleanly, abruptly, or held open. With no
plan left a stream is held open without a byte until the server stops. Every request is recorded with its
path, query and headers, so tests check what the source asked for.
"""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sources.mastodon import MastodonSource, MastodonSourceConfig
from tests.conftest import poll_until
from tests.fakes import RecordingContext

# How often a held-open stream looks whether the server is stopping.
_HOLD_SLICE_S = 0.05
STREAM_PREFIX = "/streaming-host"


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class WaitFor:
    """Hold the stream (sending nothing) until the test sets `event`."""

    event: threading.Event


CLOSE = "close"  # end the body cleanly (the terminating chunk)
DROP = "drop"  # close the socket without ending the body
HOLD = "hold"  # keep the stream open, silent, until the server stops

Step = bytes | Pause | WaitFor | str


@dataclass
class Plan:
    """One streaming connection: `status` != 200 answers with `body` (JSON) and `headers`; 200 plays `steps`."""

    steps: list[Step] = field(default_factory=list)
    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


def sse(event: str, data: str | bytes) -> bytes:
    """One SSE event as Mastodon's streaming server writes it."""
    payload = data if isinstance(data, bytes) else data.encode("utf-8")
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


HEARTBEAT = b":thump\n"


def status(status_id: str, acct: str = "alice", text: str = "hello", **extra: Any) -> dict[str, Any]:
    """A status shaped as Mastodon sends it (the fields the processor reads, and a few more)."""
    return {
        "id": status_id,
        "created_at": "2026-12-01T12:00:00.000Z",
        "content": f"<p>{text}</p>",
        "spoiler_text": "",
        "language": "en",
        "account": {"id": f"1{status_id}", "acct": acct, "username": acct.split("@")[0]},
        "tags": [],
        "reblog": None,
        "media_attachments": [],
    } | extra


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # the source drops connections on purpose (stop, stall, reconnect)


class FakeMastodon:
    """Start with `start()` (or as a context manager); `base_url` is the instance, streams under STREAM_PREFIX."""

    def __init__(self, *, instance_status: int = 200, streaming_in_instance: bool = True) -> None:
        self.plans: queue.Queue[Plan] = queue.Queue()
        self.requests: list[Request] = []
        self.timeline: list[dict[str, Any]] = []  # for /api/v1/timelines/*: served newest first, after min_id
        self.instance_status = instance_status
        self.streaming_in_instance = streaming_in_instance
        self.stream_connections = threading.Semaphore(0)  # released once per streaming request
        self.stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-mastodon", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeMastodon:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeMastodon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def plan(self, *plans: Plan) -> None:
        for plan in plans:
            self.plans.put(plan)

    def stream_requests(self) -> list[Request]:
        return [r for r in self.requests if "/streaming/" in r.path]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                fake.requests.append(Request(parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}))
                if parts.path == "/api/v2/instance":
                    self._json(fake.instance_status, fake._instance())
                elif parts.path.startswith("/api/v1/timelines/"):
                    self._json(200, fake._page(parse_qs(parts.query)))
                elif "/api/v1/streaming/" in parts.path:
                    fake.stream_connections.release()
                    self._stream(fake.plans.get_nowait() if not fake.plans.empty() else Plan([HOLD]))
                else:
                    self._json(404, {"error": "Not found"})

            def _json(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, plan: Plan) -> None:
                if plan.status != 200:
                    self._json(plan.status, plan.body or {"error": f"HTTP {plan.status}"}, plan.headers)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                for step in plan.steps:
                    if isinstance(step, bytes):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(step), step))
                        self.wfile.flush()
                    elif isinstance(step, Pause):
                        fake.stopping.wait(step.seconds)
                    elif isinstance(step, WaitFor):
                        while not step.event.wait(_HOLD_SLICE_S) and not fake.stopping.is_set():
                            pass
                    elif step == CLOSE:
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    elif step == DROP:
                        self.close_connection = True
                        return
                    elif step == HOLD:
                        fake.stopping.wait()
                self.close_connection = True

        return Handler

    def _instance(self) -> dict[str, Any]:
        if not self.streaming_in_instance:
            return {"domain": "fake.example", "configuration": {"urls": {}}}
        # As Mastodon does: a WebSocket URL; the source derives the SSE base from it.
        return {
            "domain": "fake.example",
            "configuration": {"urls": {"streaming": self.base_url.replace("http://", "ws://") + STREAM_PREFIX}},
        }

    def _page(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        min_id = query.get("min_id", ["0"])[0]
        limit = int(query.get("limit", ["20"])[0])
        newer = sorted(
            (s for s in self.timeline if (len(s["id"]), s["id"]) > (len(min_id), min_id)), key=lambda s: (len(s["id"]), s["id"])
        )
        return list(reversed(newer[:limit]))  # the page right after min_id, newest first


def events(*statuses: dict[str, Any]) -> Iterator[bytes]:
    for item in statuses:
        yield sse("update", json.dumps(item))


# --- the mastodon source run in a thread, with a recording context ---------------------

TOKEN = "s3cr3t-mastodon-token-7f1d"  # noqa: S105 - a test token, checked never to leak
# Outcomes are awaited against deadlines this long (loaded 2-core machine); none is expected to take it.
WAIT_S = 10.0
# The daemon joins a source for 5 s; the source must notice a stop well within that.
STOP_WITHIN_S = 1.5


def mastodon_context(**options: Any) -> RecordingContext:
    """A recording context named like the source; its `wait` sleeps as asked (a stop cuts it short)."""
    return RecordingContext(name="mastodon", **options)


def status_ids(ctx: RecordingContext) -> list[str]:
    """The ids of the statuses the source emitted, in order."""
    return [str(event["id"]) for event in ctx.events()]


@dataclass
class Running:
    """The source running in a thread against a fake; `stop()` asserts it ends within STOP_WITHIN_S."""

    source: MastodonSource
    ctx: RecordingContext
    thread: threading.Thread

    def stop(self) -> float:
        started = time.monotonic()
        self.ctx.stop.set()
        self.thread.join(WAIT_S)
        took = time.monotonic() - started
        assert not self.thread.is_alive(), "the source did not stop"
        assert took < STOP_WITHIN_S, f"the source took {took:.2f}s to stop"
        return took

    def until(self, what: str, check: Any) -> Any:
        return poll_until(check, WAIT_S, what, interval=0.02)


def config(fake: FakeMastodon | str, **overrides: Any) -> MastodonSourceConfig:
    instance = fake if isinstance(fake, str) else fake.base_url
    values: dict[str, Any] = {"instance": instance, "access_token": TOKEN, "stall_timeout": 5.0, "reconnect_initial": 0.05}
    return MastodonSourceConfig(**(values | overrides))


def start(fake: FakeMastodon | str, ctx: RecordingContext | None = None, **overrides: Any) -> Running:
    source = MastodonSource(config(fake, **overrides), rng=random.Random(7))
    ctx = ctx or mastodon_context()
    thread = threading.Thread(target=source.run, args=(ctx,), name="mastodon-under-test", daemon=True)
    thread.start()
    return Running(source, ctx, thread)
