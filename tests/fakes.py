"""Shared fakes: a real HTTP endpoint on 127.0.0.1 that speaks the AWS JSON protocol, scripted per test;
a scripted sink for the daemon's tests; a recording SourceContext for the sources' tests.

boto3 clients reach it through `endpoint_url`, so the sink and the processor are exercised through their
real HTTP stack (signing, retries disabled or not, timeouts) while the test decides every answer: partial
failures, throttling, 5xx, dropped connections.
"""

from __future__ import annotations

import json
import threading
import time
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
            config=Config(**({"retries": {"total_max_attempts": 1, "mode": "standard"}} | config)),
        )


# --- a scripted sink, for the daemon's own tests -------------------------------------------------

from sinks.base import Deadline, Record, RecordRejected, SinkConfig  # noqa: E402
from sinks.batch import BatchLimits, BatchSink, WriteResult  # noqa: E402


@dataclass
class FakeEntry:
    record: Record
    size: int


class ScriptedSinkConfig(SinkConfig):
    type: str = "scripted"


class ScriptedSink(BatchSink[FakeEntry]):
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
        events: Any = None,
    ) -> None:
        # Without events of its own, the sink reports to the daemon telemetry its worker is built with.
        super().__init__(ScriptedSinkConfig(), events=events)
        self._limits = limits
        self.decide = decide
        self.reject_when = reject_when
        self.batches: list[list[Record]] = []
        self.block = threading.Event()
        self.block.set()

    @property
    def limits(self) -> BatchLimits:
        return self._limits

    def start(self, completion: Any) -> None:
        if self.events is None:
            self.events = getattr(completion, "telemetry", None)
        super().start(completion)

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


# --- a sink that wedges for real, for the systemd watchdog's daemon tests ----------------------------

from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Literal  # noqa: E402

from sinks.base import Completion, Sink, SinkEvents, register_sink  # noqa: E402


class WedgingSinkConfig(SinkConfig):
    type: Literal["wedging"] = "wedging"
    landed: Path  # each record taken is appended here (its data, one line): where a test checks what arrived
    wedge_after: int | None = None  # once this many records were taken, `submit` never returns; None: never


@dataclass
class WedgingEntry:
    record: Record
    size: int


class WedgingSink(Sink[WedgingEntry]):
    """Takes records straight into the `landed` file (each submit is one completed "request") until
    `wedge_after` were taken; then `submit` blocks forever, as a sink stuck in a call that never returns
    would: the worker's loop stops turning and no request completes again. Only SIGKILL ends such a daemon."""

    config_model = WedgingSinkConfig

    def __init__(self, config: SinkConfig, events: SinkEvents) -> None:
        assert isinstance(config, WedgingSinkConfig)
        super().__init__(config, events)
        self._wedge_after = config.wedge_after
        self._landed = config.landed.open("ab")
        self._taken = 0
        self._completion: Completion[WedgingEntry] | None = None
        # Never set: the wedged submit waits on it with no timeout, so nothing (not even a deadline) frees it.
        self._never = threading.Event()

    def prepare(self, record: Record) -> WedgingEntry:
        return WedgingEntry(record, len(record.data))

    def start(self, completion: Completion[WedgingEntry]) -> None:
        self._completion = completion

    def submit(self, entries: Sequence[WedgingEntry], deadline: Deadline) -> int:
        assert self._completion is not None, "submit before start"
        room = len(entries) if self._wedge_after is None else max(0, self._wedge_after - self._taken)
        taken = list(entries[:room])
        if taken:
            self._landed.write(b"".join(entry.record.data + b"\n" for entry in taken))
            self._landed.flush()  # the test reads the file while the daemon runs
            self._taken += len(taken)
            self._completion.sent(taken)
            self.events.put_requested(result="success", records=len(taken), accepted=len(taken), latency_s=0.0)
        if self._wedge_after is not None and self._taken >= self._wedge_after:
            self._never.wait()
        return len(taken)

    def finish(self, deadline: Deadline) -> None:
        return  # every taken entry was reported as it was taken; a wedged sink never gets here

    def close(self) -> None:
        self._landed.close()


def register_test_sinks() -> None:
    """Register the test sinks in this process only: called by a daemon a test starts through
    `TEST_SINKS_RUNNER`, never at import, so the test session's own registry (which test_readme checks
    against the README's tables) holds only the real sinks."""
    register_sink(WedgingSink)


# `python -c TEST_SINKS_RUNNER run -c CONFIG`: the `tweet-producer` command with the test sinks registered.
TEST_SINKS_RUNNER = (
    "from tests.fakes import register_test_sinks; register_test_sinks(); from cli.main import main; raise SystemExit(main())"
)


# --- a recording SourceContext, for the sources' own tests ---------------------------------------


@dataclass
class RecordingContext:
    """A SourceContext (sources/base.py) that keeps, in order, everything a source hands over.

    The options script the daemon's side: stop after so many emits or reconnects, crash once on an emit,
    block emits like a full buffer, cap how long `wait` really sleeps, or make any reject a test failure.
    """

    name: str = "source"
    # Options (the daemon's behaviour as the source sees it).
    max_wait_s: float | None = None  # `wait` sleeps at most this (0: returns at once); None: as long as asked
    stop_after_emits: int | None = None  # `stop` is set once this many records were emitted
    stop_after_reconnects: int | None = None  # `stop` is set once this many reconnects were announced
    crash_after_emits: int | None = None  # the next emit, once this many were emitted, raises OSError (once)
    block_emits_until_stop: bool = False  # emit blocks like a full buffer until `stop`, then returns False
    rejects_fail: bool = False  # a reject raises AssertionError: for sources whose every input is valid
    stop: threading.Event = field(default_factory=threading.Event)
    # What the source handed over.
    emitted: list[tuple[bytes, Any, str]] = field(default_factory=list)  # emit(data, event, origin)
    emitted_at: list[float] = field(default_factory=list)  # time.monotonic() of each emit
    emit_blocked: threading.Event = field(default_factory=threading.Event)  # an emit is blocking until stop
    rejected: list[tuple[bytes, str, str, str]] = field(default_factory=list)  # reject(data, origin, reason, detail)
    # The token of every emit taken and every reject, in call order: ("emit" | "reject", token).
    tokens: list[tuple[str, Any]] = field(default_factory=list)
    protocol_messages: list[tuple[str, str]] = field(default_factory=list)  # protocol_message(kind, detail)
    wait_requests: list[float] = field(default_factory=list)  # the seconds asked of each wait(), in order
    connections: list[tuple[bool, str]] = field(default_factory=list)  # connection(connected, detail)
    reconnects: list[tuple[str, float, str]] = field(default_factory=list)  # reconnecting(reason, delay_s, detail)
    reconnected_at: list[float] = field(default_factory=list)  # time.monotonic() of each reconnecting()

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def emit(self, data: bytes, event: Any, origin: str, token: Any = None) -> bool:
        if self.block_emits_until_stop:
            self.emit_blocked.set()
            self.stop.wait()
            return False
        if self.crash_after_emits is not None and len(self.emitted) == self.crash_after_emits:
            self.crash_after_emits = None
            raise OSError("disk hiccup")
        if self.stop.is_set():
            return False
        self.emitted.append((data, event, origin))
        self.emitted_at.append(time.monotonic())
        self.tokens.append(("emit", token))
        if self.stop_after_emits is not None and len(self.emitted) >= self.stop_after_emits:
            self.stop.set()
        return True

    def reject(self, data: bytes, origin: str, reason: str, detail: str, token: Any = None) -> None:
        if self.rejects_fail:
            raise AssertionError(f"a {self.name} record was rejected: {origin} {reason} {detail}")
        self.rejected.append((data, origin, reason, detail))
        self.tokens.append(("reject", token))

    def wait(self, seconds: float) -> bool:
        self.wait_requests.append(seconds)
        return self.stop.wait(seconds if self.max_wait_s is None else min(seconds, self.max_wait_s))

    def connection(self, connected: bool, detail: str = "") -> None:
        self.connections.append((connected, detail))

    def reconnecting(self, reason: str, delay_s: float, detail: str = "") -> None:
        self.reconnects.append((reason, delay_s, detail))
        self.reconnected_at.append(time.monotonic())
        if self.stop_after_reconnects is not None and len(self.reconnects) >= self.stop_after_reconnects:
            self.stop.set()

    def protocol_message(self, kind: str, detail: str) -> None:
        self.protocol_messages.append((kind, detail))

    def events(self) -> list[Any]:
        """The parsed form of each emitted record, in order."""
        return [event for _, event, _ in self.emitted]

    def reconnect_delays(self) -> list[float]:
        """The delay each announced reconnect said it would wait."""
        return [delay for _, delay, _ in self.reconnects]

    def everything_said(self) -> str:
        """Every text the source handed over besides record data (the daemon logs, counts or dead-letters it)."""
        parts = [origin for _, _, origin in self.emitted]
        parts += [f"{o} {r} {d} {data!r}" for data, o, r, d in self.rejected]
        parts += [d for _, d in self.connections] + [f"{r} {d}" for r, _, d in self.reconnects]
        parts += [f"{k} {d}" for k, d in self.protocol_messages]
        return "\n".join(parts)


def ledger(
    received: int = 0,
    sent: int = 0,
    dead_lettered: int = 0,
    unsent: int = 0,
    kept: int = 0,
    dropped: int = 0,
    lost: int = 0,
    filtered: int = 0,
) -> dict[str, int]:
    """The daemon's `Ledger.totals()` as a test expects it: every outcome named, the unnamed ones zero."""
    return {
        "received": received, "sent": sent, "dead_lettered": dead_lettered, "filtered": filtered, "unsent": unsent,
        "kept": kept, "dropped": dropped, "lost": lost,
    }  # fmt: skip
