"""A scripted HTTP endpoint on 127.0.0.1 for the PutRecords wire client's tests.

Unlike tests/fakes.py it keeps what arrived on the wire (path, headers as sent, raw body, which TCP
connection), counts the connections it accepted, and can misbehave at each point of an exchange: reset
before reading the body, reset after reading it, stall, cut the answer short, reset after answering.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STALL_LIMIT_S = 10.0  # a stalled answer gives up after this even if the test never releases it
SHARD = "shardId-000000000000"
SHUTDOWN_POLL_S = 0.02  # how often serve_forever looks for shutdown: stopping takes at most this


@dataclass
class Received:
    """One request as it arrived."""

    connection: int  # 1-based number of the TCP connection it came on
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    def records(self) -> list[tuple[bytes, str, str | None]]:
        """(data, partition key, explicit hash key) of each entry, in order."""
        return [(base64.b64decode(r["Data"]), r["PartitionKey"], r.get("ExplicitHashKey")) for r in self.json()["Records"]]


def echo_all(body: dict[str, Any]) -> dict[str, Any]:
    """Accepts every entry; each sequence number is the entry's base64 data, so a crossed answer shows."""
    return {"FailedRecordCount": 0, "Records": [{"ShardId": SHARD, "SequenceNumber": r["Data"]} for r in body["Records"]]}


@dataclass
class Answer:
    """What the server does with one request."""

    status: int = 200
    payload: Any = None  # a JSON value, or a callable(request JSON) -> JSON value; None: echo_all
    raw: bytes | None = None  # these bytes as the body instead of JSON
    headers: dict[str, str] = field(default_factory=dict)
    # "answer" | "reset_unread" (RST before reading the body) | "reset" (RST after reading it) | "stall"
    # (no answer until released) | "truncate" (half the announced body, then close) | "answer_then_reset"
    action: str = "answer"

    def body_for(self, request: dict[str, Any]) -> bytes:
        if self.raw is not None:
            return self.raw
        payload = self.payload(request) if callable(self.payload) else self.payload
        return json.dumps(echo_all(request) if payload is None else payload).encode()


def _reset(connection: socket.socket) -> None:
    """Close with an RST (linger 0) rather than a FIN."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # the connections it breaks on purpose raise in the handler: expected


@dataclass
class WireServer:
    """Answers from `script` (one Answer per request, in order), then from `default`."""

    script: list[Answer] = field(default_factory=list)
    default: Answer = field(default_factory=Answer)
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    release: threading.Event = field(default_factory=threading.Event)  # ends every stall
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server context
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    @property
    def reset_after_answer(self) -> threading.Event:
        """Set once an `answer_then_reset` connection was reset (its RST sent)."""
        event: threading.Event | None = getattr(self, "_reset_after_answer", None)
        if event is None:
            event = self._reset_after_answer = threading.Event()
        return event

    def next_answer(self) -> Answer:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    def start(self) -> WireServer:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - no per-request logs
                return

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake.connections += 1
                    self.number = fake.connections

            def do_POST(self) -> None:
                answer = fake.next_answer()
                headers = {k.lower(): v for k, v in self.headers.items()}
                if answer.action == "reset_unread":
                    self._break()
                    return
                body = self.rfile.read(int(headers.get("content-length", "0")))
                with fake._lock:
                    fake.received.append(Received(self.number, self.path, headers, body))
                if answer.action == "reset":
                    self._break()
                    return
                if answer.action == "stall":
                    fake.release.wait(STALL_LIMIT_S)
                    self._break()
                    return
                data = answer.body_for(json.loads(body or b"{}"))
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if answer.action == "truncate":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)
                self.wfile.flush()
                if answer.action == "answer_then_reset":
                    self._break()
                    fake.reset_after_answer.set()

            def _break(self) -> None:
                self.close_connection = True
                self.rfile.close()
                self.wfile.close()
                _reset(self.connection)

        self._server = _QuietServer(("127.0.0.1", 0), _Handler)
        server = self._server
        if self.tls is not None:  # the handshake runs in accept(); a client refusing it fails only that accept
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL_S,), name="wire-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
