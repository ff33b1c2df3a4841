"""A fake Jetstream instance (a real websocket server on 127.0.0.1, websockets' sync server in a thread),
and the helpers that drive the jetstream source against it.

It holds a time-ordered list of events, answers `/subscribe?cursor=...` by replaying the events at or after the
cursor (as the real server does), records every request's query, and follows one scripted `Plan` per
connection: refuse with an HTTP status, send some raw frames first, then close with a code, stall, or hold
the connection open and stream events as they are published.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from sources.jetstream import JetstreamSource, JetstreamSourceConfig
from tests.conftest import poll_until
from tests.fakes import RecordingContext

# How often a held or stalled connection looks for new events and for the server's own stop.
_POLL_S = 0.05


@dataclass
class Plan:
    """What the fake does on one connection."""

    status: int | None = None  # refuse the upgrade with this HTTP status
    frames: list[bytes | str] = field(default_factory=list)  # sent first; bytes go out as (unchecked) text frames
    send: int | None = None  # events to send before `then` (None = all there are)
    then: Literal["hold", "close", "stall", "drop"] = "hold"
    close_code: int = 1000
    close_reason: str = ""


def commit_event(time_us: int, rkey: str, text: str = "hello", did: str = "did:plc:alice", **commit: Any) -> dict[str, Any]:
    """A Jetstream commit creating an app.bsky.feed.post (fields overridable)."""
    body: dict[str, Any] = {
        "rev": f"rev{time_us}",
        "operation": "create",
        "collection": "app.bsky.feed.post",
        "rkey": rkey,
        "record": {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-01T12:00:00.000Z", "langs": ["en"]},
        "cid": f"bafy{rkey}",
    }
    body.update(commit)
    return {"did": did, "time_us": time_us, "kind": "commit", "commit": body}


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class FakeJetstream:
    """Start with `start()`, point a source at `url`, stop with `stop()` (or use it as a context manager)."""

    def __init__(self, events: list[dict[str, Any]] | None = None) -> None:
        self.events: list[dict[str, Any]] = list(events or [])
        self.plans: deque[Plan] = deque()
        self.queries: list[dict[str, list[str]]] = []  # every request, refused ones included
        self.connections = 0  # upgraded connections
        self.raw_query: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        assert self._port is not None, "start() the fake first"
        return f"ws://127.0.0.1:{self._port}/subscribe"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def start(self) -> FakeJetstream:
        self._server = serve(self._handle, "127.0.0.1", 0, process_request=self._process_request, max_size=None)
        self._port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-jetstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeJetstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _plan(self) -> Plan:
        with self._lock:
            return self.plans[0] if self.plans else Plan()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        with self._lock:
            self.queries.append(parse_qs(parts.query))
            self.raw_query.append(parts.query)
        plan = self._plan()
        if parts.path != "/subscribe":
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if plan.status is not None:
            with self._lock:
                if self.plans:
                    self.plans.popleft()
            return connection.respond(HTTPStatus(plan.status), "refused by the test\n")
        return None

    def _handle(self, ws: ServerConnection) -> None:
        with self._lock:
            plan = self.plans.popleft() if self.plans else Plan()
            self.connections += 1
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        cursor = int(query["cursor"][0]) if "cursor" in query else None
        try:
            for frame in plan.frames:
                ws.send(frame, text=True)
            sent = 0
            index = 0
            while not self._stopping.is_set():
                with self._lock:
                    pending = self.events[index:]
                index += len(pending)
                for event in pending:
                    if plan.send is not None and sent >= plan.send:
                        break
                    if cursor is None or event["time_us"] >= cursor:
                        ws.send(encode(event).decode("utf-8"))
                        sent += 1
                if (plan.send is not None and sent >= plan.send) or plan.then != "hold":
                    break
                if self._closed_by_client(ws):
                    return
            if plan.then == "close":
                ws.close(plan.close_code, plan.close_reason)
            elif plan.then == "drop":
                ws.socket.close()  # no close frame: a network failure as the client sees it
            elif plan.then == "stall":
                while not self._stopping.is_set() and not self._closed_by_client(ws):
                    pass
            else:
                while not self._stopping.is_set() and not self._closed_by_client(ws):
                    with self._lock:
                        pending = self.events[index:]
                    index += len(pending)
                    for event in pending:
                        ws.send(encode(event).decode("utf-8"))
        except ConnectionClosed:
            return

    @staticmethod
    def _closed_by_client(ws: ServerConnection) -> bool:
        try:
            ws.recv(timeout=_POLL_S)
        except TimeoutError:
            return False
        except ConnectionClosed:
            return True
        return False


# --- driving the source: a recording context and a runner ------------------------------------------

# The source must notice a stop within this (the daemon allows 5 s).
STOP_BUDGET_S = 2.0
OUTCOME_TIMEOUT_S = 10.0


def jetstream_context(max_wait_s: float | None = 0.0, **options: Any) -> RecordingContext:
    """A recording context whose `wait` returns at once (backoff delays are only recorded) unless `max_wait_s` says."""
    return RecordingContext(name="jetstream", max_wait_s=max_wait_s, **options)


def rkeys(ctx: RecordingContext) -> list[str]:
    """The record keys of the posts the source emitted, in order."""
    return [event["commit"]["rkey"] for event in ctx.events()]


def jetstream(urls: list[str], **config: Any) -> JetstreamSource:
    """A source with fast test timings unless overridden."""
    settings: dict[str, Any] = {"instances": urls, "initial_backoff": 0.01, "max_backoff": 0.05} | config
    return JetstreamSource(JetstreamSourceConfig(**settings))


def run_until(
    source: JetstreamSource, ctx: RecordingContext, done: Callable[[], Any], what: str, join_timeout: float = STOP_BUDGET_S + 1
) -> float:
    """Run the source in a thread until `done()`; then stop it and return how long it took to end."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            source.run(ctx)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        poll_until(lambda: done() or failure, OUTCOME_TIMEOUT_S, what, interval=0.02)
    finally:
        ctx.stop.set()
        started = time.monotonic()
        thread.join(join_timeout)
        took = time.monotonic() - started
    if failure:
        raise failure[0]
    assert not thread.is_alive(), "the source did not stop"
    return took
