"""Shared fakes: a real HTTP endpoint on 127.0.0.1 that speaks the AWS JSON protocol, scripted per test.

boto3 clients reach it through `endpoint_url`, so the sink and the processor are exercised through their
real HTTP stack (signing, retries disabled or not, timeouts) while the test decides every answer: partial
failures, throttling, 5xx, dropped connections.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from botocore.config import Config


@dataclass
class Reply:
    """An answer to one AWS JSON request: a body with a status, or an abruptly closed connection."""

    body: dict[str, Any] | None = None
    status: int = 200
    error_code: str | None = None  # sets the `__type` of an error body
    message: str = ""
    drop_connection: bool = False

    @classmethod
    def error(cls, code: str, status: int = 400, message: str = "") -> Reply:
        return cls(status=status, error_code=code, message=message or code)


Handler = Callable[[str, dict[str, Any]], Reply | dict[str, Any]]


@dataclass
class Call:
    """One request the fake received: the operation (from X-Amz-Target) and its JSON body."""

    operation: str
    body: dict[str, Any]


class _QuietServer(ThreadingHTTPServer):
    """Connections the fake drops on purpose (or clients abandon) are expected: no traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


@dataclass
class FakeAwsServer:
    """An HTTP server on 127.0.0.1 whose answers come from `handler(operation, body)`."""

    handler: Handler
    calls: list[Call] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeAwsServer:
        fake = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, delayed ACKs add ~40 ms a request.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request logs
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                target = self.headers.get("X-Amz-Target", "")
                operation = target.rsplit(".", 1)[-1]
                body = json.loads(raw or b"{}")
                with fake._lock:
                    fake.calls.append(Call(operation, body))
                answer = fake.handler(operation, body)
                reply = answer if isinstance(answer, Reply) else Reply(body=answer)
                if reply.drop_connection:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                payload: dict[str, Any]
                if reply.error_code is not None:
                    payload = {"__type": reply.error_code, "message": reply.message}
                else:
                    payload = reply.body or {}
                data = json.dumps(payload).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = _QuietServer(("127.0.0.1", 0), _RequestHandler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-aws", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def operations(self, name: str) -> list[dict[str, Any]]:
        """Bodies of the received requests for one operation, in arrival order."""
        with self._lock:
            return [call.body for call in self.calls if call.operation == name]

    def client(self, service: str, **config: Any) -> Any:
        """A boto3 client for `service` pointed at this fake, with dummy credentials."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="fake",
            aws_secret_access_key="fake",  # noqa: S106 - a dummy for the fake endpoint
            config=Config(**({"retries": {"max_attempts": 1, "mode": "standard"}} | config)),
        )


# --- a scripted sink, for the daemon's own tests -------------------------------------------------

from sinks.base import BatchLimits, Deadline, Record, RecordRejected, Sink, SinkConfig, WriteResult  # noqa: E402


@dataclass
class FakeEntry:
    record: Record
    size: int


class ScriptedSinkConfig(SinkConfig):
    type: str = "scripted"


class ScriptedSink(Sink[FakeEntry]):
    """A sink whose answer per entry comes from `decide(record) -> "sent" | "failed" | "unsent" | "lost"`.

    `reject_when(record)` makes `prepare` reject a record; `block` holds every write until set (or the
    deadline passes: then everything is unsent), like a destination that is down.
    """

    config_model = ScriptedSinkConfig

    def __init__(
        self,
        limits: BatchLimits,
        decide: Callable[[Record], str] = lambda _r: "sent",
        reject_when: Callable[[Record], bool] = lambda _r: False,
    ) -> None:
        super().__init__(ScriptedSinkConfig(), events=None)  # type: ignore[arg-type]
        self._limits = limits
        self.decide = decide
        self.reject_when = reject_when
        self.batches: list[list[Record]] = []
        self.block = threading.Event()
        self.block.set()

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    def prepare(self, record: Record) -> FakeEntry:
        if self.reject_when(record):
            raise RecordRejected("record_too_large", f"{len(record.data)} bytes")
        return FakeEntry(record, len(record.data))

    def write(self, batch: list[FakeEntry], deadline: Deadline) -> WriteResult[FakeEntry]:
        self.batches.append([e.record for e in batch])
        result: WriteResult[FakeEntry] = WriteResult()
        while not self.block.is_set():
            if deadline.sleep(0.01):
                result.unsent.extend(batch)
                return result
        for entry in batch:
            outcome = self.decide(entry.record)
            if outcome == "sent":
                result.sent.append(entry)
            elif outcome == "failed":
                result.failed.append((entry, "put_rejected", "ValidationException"))
            elif outcome == "unsent":
                result.unsent.append(entry)
        return result
