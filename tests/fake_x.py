"""A fake X API v2 on 127.0.0.1: chunked streams scripted per connection, the rules endpoints (with dry_run and
validation errors), the OAuth 2 token exchange and the Connections API. Optionally over TLS.

Each stream connection takes the next `StreamScript` (status, then steps: chunks, pauses, waits for an event,
a clean close or a TCP reset); without one it holds the connection open and silent, like a stalled X.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

KEEPALIVE = b"\r\n"
_HOLD_POLL_S = 0.02


@dataclass(frozen=True)
class Send:
    data: bytes


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Until:
    event: threading.Event


@dataclass(frozen=True)
class Close:
    """End the chunked body cleanly and close the connection."""


@dataclass(frozen=True)
class Reset:
    """Abort the TCP connection (RST) without ending the body."""


Step = Send | Pause | Until | Close | Reset


@dataclass
class StreamScript:
    status: int = 200
    body: dict[str, Any] | None = None  # the JSON body of a non-200 answer
    steps: list[Step] = field(default_factory=list)
    hold_headers: bool = False  # accept the request, never answer it


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float


def tweet_line(n: int, author: str = "7", username: str = "alice", rule: str = "r1") -> bytes:
    """One stream line as X sends it: data, includes.users, matching_rules."""
    return json.dumps(
        {
            "data": {
                "id": str(1_800_000_000_000_000_000 + n),
                "text": f"tweet {n} 🚀",
                "author_id": author,
                "edit_history_tweet_ids": [str(n)],
            },
            "includes": {"users": [{"id": author, "username": username, "name": username.title()}]},
            "matching_rules": [{"id": rule, "tag": "t"}],
        },
        ensure_ascii=False,
    ).encode()


def paced_steps(lines: list[bytes], rate: float, per_chunk: int) -> list[Step]:
    """Steps sending `lines` (CRLF-terminated) in chunks of `per_chunk` at about `rate` lines/s: a fast live
    stream for the crash tests (a few thousand tweets/s from one handler thread)."""
    steps: list[Step] = []
    for start in range(0, len(lines), per_chunk):
        steps.append(Send(b"".join(line + b"\r\n" for line in lines[start : start + per_chunk])))
        steps.append(Pause(per_chunk / rate))
    return steps


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


@dataclass
class FakeX:
    token: str = "fake-bearer-token-SECRET-1234567890"  # noqa: S105 - the fake's own dummy
    consumer_key: str = "fake-key"
    consumer_secret: str = "fake-secret-SHH"  # noqa: S105 - a dummy
    scripts: list[StreamScript] = field(default_factory=list)
    rules: list[dict[str, str]] = field(default_factory=list)
    bad_rule_marker: str = "(("  # a rule value containing it fails validation
    rules_status: int | None = None  # answer every rules call with this status
    hold_rules: bool = False  # never answer the rules listing
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    # Every Send's bytes, noted just before the write: a superset of what any client can have received.
    sent: list[bytes] = field(default_factory=list)
    _next_rule_id: int = 100
    _server: ThreadingHTTPServer | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def sent_lines(self) -> list[bytes]:
        """The stream lines (tweets and bad lines, keep-alives left out) of every Send so far, in order."""
        with self._lock:
            chunks = list(self.sent)
        return [line for chunk in chunks for line in chunk.split(b"\r\n") if line]

    def stream_connects(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/stream")]

    def calls(self, method: str, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def start(self) -> FakeX:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

            def _record(self) -> Request:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("latin-1")
                request = Request(self.command, parts.path, parse_qs(parts.query), dict(self.headers), body, time.monotonic())
                with fake._lock:
                    fake.requests.append(request)
                return request

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {fake.token}":
                    return True
                self._json(401, {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})
                return False

            def do_GET(self) -> None:
                request = self._record()
                if not self._authorised():
                    return
                if request.path.endswith("/stream/rules"):
                    self._rules_get()
                elif request.path.endswith("/stream"):
                    self._stream()
                else:
                    self._json(404, {"title": "Not Found"})

            def do_DELETE(self) -> None:
                request = self._record()
                if self._authorised():
                    self._json(200, {"data": {"killed_connections": True}} if request.path == "/2/connections/all" else {})

            def do_POST(self) -> None:
                request = self._record()
                if request.path == "/oauth2/token":
                    expected = base64.b64encode(f"{fake.consumer_key}:{fake.consumer_secret}".encode()).decode()
                    if self.headers.get("Authorization") != f"Basic {expected}":
                        self._json(403, {"errors": [{"code": 99, "message": "Unable to verify your credentials"}]})
                    else:
                        self._json(200, {"token_type": "bearer", "access_token": fake.token})
                    return
                if not self._authorised():
                    return
                if fake.rules_status is not None:
                    self._json(fake.rules_status, {"title": "Service Unavailable"})
                    return
                self._rules_post(request)

            def _rules_get(self) -> None:
                if fake.hold_rules:
                    fake._stopped.wait()
                    return
                if fake.rules_status is not None:
                    self._json(fake.rules_status, {"title": "Service Unavailable"})
                    return
                with fake._lock:
                    rules = [dict(r) for r in fake.rules]
                self._json(200, {"data": rules, "meta": {"result_count": len(rules)}} if rules else {"meta": {"result_count": 0}})

            def _rules_post(self, request: Request) -> None:
                body = request.body if isinstance(request.body, dict) else {}
                dry_run = request.query.get("dry_run") == ["true"]
                if "add" in body:
                    errors, created = [], []
                    with fake._lock:
                        held = {r["value"] for r in fake.rules}
                    for rule in body["add"]:
                        if rule["value"] in held:
                            errors.append(
                                {
                                    "value": rule["value"],
                                    "id": "0",
                                    "title": "DuplicateRule",
                                    "type": "https://api.x.com/2/problems/duplicate-rules",
                                }
                            )
                        elif fake.bad_rule_marker in rule["value"]:
                            errors.append(
                                {
                                    "value": rule["value"],
                                    "id": "0",
                                    "title": "UnprocessableEntity",
                                    "type": "https://api.x.com/2/problems/invalid-rules",
                                    "details": ["Rules must contain balanced parentheses"],
                                }
                            )
                        else:
                            created.append(rule)
                    if not dry_run and not errors:
                        with fake._lock:
                            for rule in created:
                                fake._next_rule_id += 1
                                fake.rules.append({"id": str(fake._next_rule_id), **rule})
                    answer: dict[str, Any] = {
                        "data": created,
                        "meta": {"summary": {"created": len(created), "invalid": len(errors)}},
                    }
                    if errors:
                        answer["errors"] = errors
                    self._json(200 if dry_run else 201, answer)
                elif "delete" in body:
                    ids = set(body["delete"]["ids"])
                    with fake._lock:
                        fake.rules = [r for r in fake.rules if r["id"] not in ids]
                    self._json(200, {"meta": {"summary": {"deleted": len(ids)}}})
                else:
                    self._json(400, {"errors": [{"message": "bad request"}], "title": "Invalid Request"})

            def _stream(self) -> None:
                with fake._lock:
                    script = fake.scripts.pop(0) if fake.scripts else StreamScript()
                if script.hold_headers:
                    fake._stopped.wait()
                    return
                if script.status != 200:
                    self._json(script.status, script.body or {"title": "error", "status": script.status})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                try:
                    for step in script.steps:
                        if isinstance(step, Send):
                            with fake._lock:
                                fake.sent.append(step.data)
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(step.data), step.data))
                            self.wfile.flush()
                        elif isinstance(step, Pause):
                            fake._stopped.wait(step.seconds)
                        elif isinstance(step, Until):
                            while not step.event.wait(_HOLD_POLL_S) and not fake._stopped.is_set():
                                pass
                        elif isinstance(step, Close):
                            self.wfile.write(b"0\r\n\r\n")
                            self.wfile.flush()
                            self.close_connection = True
                            return
                        elif isinstance(step, Reset):
                            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            self.connection.close()
                            self.close_connection = True
                            return
                    fake._stopped.wait()  # hold open, silent
                except OSError:
                    pass
                self.close_connection = True

        server = _QuietServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, name="fake-x", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
