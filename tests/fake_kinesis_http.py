"""The HTTP/1.1 side of tests/fake_kinesis.py: keep-alive, no Nagle, resets as TCP RST, held-back answers."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fake_kinesis_types import CONTENT_TYPE, SHUTDOWN_POLL_S, Answer, RawRequest

# SO_LINGER on with a zero timeout: close() then sends a TCP RST instead of a FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


class FakeServer(ThreadingHTTPServer):
    """A threading HTTP server that can also drop its open keep-alive connections, as a dying endpoint does."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connections the fake resets on purpose (or clients abandon) are expected: no traceback on stderr.
        return

    def opened(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.add(connection)

    def finished(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(connection)

    def close_connections(self) -> None:
        """Resets every open connection: a client's next request on one fails instead of being answered."""
        with self._open_lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            try:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by its handler
                pass


def serve(handle: Callable[[RawRequest], Answer], closing: threading.Event, on_connection: Callable[[], None],
          reset_on_arrival: Callable[[str], bool]) -> FakeServer:
    """Starts a server on 127.0.0.1:0 answering each POST with ``handle(request)``, or resetting the connection
    before reading the body when ``reset_on_arrival(X-Amz-Target)`` says so.

    A held-back answer (``Answer.delay_s``) is dropped, with a reset, once ``closing`` is set.
    """

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        # Headers and body go out in separate writes: without this, delayed ACKs add ~40 ms a request.
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            server.opened(self.connection)
            on_connection()

        def finish(self) -> None:
            server.finished(self.connection)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
            return

        def do_POST(self) -> None:
            if reset_on_arrival(self.headers.get("X-Amz-Target", "")):
                self._reset()
                return
            length = int(self.headers.get("Content-Length") or 0)
            # The whole request is read before any fault: a reset then leaves the client unable to tell
            # whether the request was processed, as with a real lost answer.
            raw = self.rfile.read(length) if length > 0 else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = handle(RawRequest(self.command, self.path, headers, raw))
            if answer.reset or (answer.delay_s > 0 and closing.wait(answer.delay_s)):
                self._reset()
                return
            data = json.dumps(answer.payload or {}).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _reset(self) -> None:
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            self.connection.close()

    server = FakeServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, args=(SHUTDOWN_POLL_S,), name="fake-kinesis", daemon=True).start()
    return server
