"""Source `x`, the wire side: reading one stream response without blocking the source, and splitting its lines.

TwitterAPI's own iterator reads byte by byte and only notices a stall after its class-wide
`STREAMING_TIMEOUT` (90 s), and a socket read timeout inside urllib3 closes the connection, so the source
cannot poll the stop flag with short reads. Instead one thread per connection does the blocking reads and
hands chunks over a small bounded queue; the source takes them with a short timeout, keeps its own stall
clock, and on stop or stall shuts the socket down, which ends the blocked read at once.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from dataclasses import dataclass
from typing import Any

import requests

# Chunks waiting for the source: a few hundred KiB at most. When the source is slow (buffer full) the reader
# blocks, TCP pushes back, and X eventually drops us as a slow reader, which the reconnect rules handle.
QUEUE_CHUNKS = 64
_READ_BYTES = 64 * 1024
# How often a reader blocked on a full queue re-checks that its connection was closed.
_PUT_RETRY_S = 0.2


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The response ended: cleanly (`error` None, the server closed it) or with the read's exception."""

    error: BaseException | None


class StreamReader:
    """Reads one streaming response in a thread of its own; `get` returns its chunks with a timeout."""

    def __init__(self, response: requests.Response) -> None:
        self._response = response
        self._queue: queue.Queue[bytes | StreamEnd] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="x-stream-reader", daemon=True)

    def start(self) -> StreamReader:
        self._thread.start()
        return self

    def get(self, timeout_s: float) -> bytes | StreamEnd | None:
        """The next chunk or the end; None when nothing came within `timeout_s`."""
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Ends the connection now; the reader thread's blocked read returns and the thread ends."""
        self._closed.set()
        _shutdown_socket(self._response)
        # Closing a broken connection may fail; it is gone either way.
        with contextlib.suppress(Exception):
            self._response.close()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _read(self) -> None:
        try:
            raw = self._response.raw
            # X sends chunked bodies: each chunk as it arrives. Anything else: whatever the socket has.
            chunks: Any = raw.stream(None, decode_content=True) if raw.chunked else iter(lambda: raw.read1(_READ_BYTES), b"")
            for chunk in chunks:
                if self._closed.is_set():
                    return
                if chunk:
                    self._put(bytes(chunk))
            self._put(StreamEnd(None))
        except Exception as exc:  # noqa: BLE001 - any read failure ends this connection; the source reconnects
            self._put(StreamEnd(exc))

    def _put(self, item: bytes | StreamEnd) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=_PUT_RETRY_S)
                return
            except queue.Full:
                continue


def _shutdown_socket(response: requests.Response) -> None:
    """Shut the response's socket down: unlike close(), this wakes a read blocked in another thread."""
    raw = response.raw
    candidates = [getattr(getattr(raw, "_connection", None), "sock", None)]
    fp = getattr(getattr(raw, "_fp", None), "fp", None)
    candidates.append(getattr(getattr(fp, "raw", None), "_sock", None))
    for sock in candidates:
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return


class LineSplitter:
    """Cuts a byte stream into lines (LF, an optional CR before it removed), none longer than `max_line_bytes`.

    `feed` returns (line, truncated) pairs. An over-long line comes out once, cut at `max_line_bytes + 1`
    bytes with truncated=True (so the parser rejects it as `line_too_long`); the rest of it, up to its
    newline, is dropped without being buffered. Empty lines are X's keep-alives.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._pending = bytearray()
        self._discarding = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        lines: list[tuple[bytes, bool]] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            piece = chunk[start:end]
            start = end + 1
            if self._discarding:
                self._discarding = False
                self._pending.clear()
                continue
            self._pending += piece
            line = bytes(self._pending)
            self._pending.clear()
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line_bytes:
                lines.append((line[: self.max_line_bytes + 1], True))
            else:
                lines.append((line, False))
        if not self._discarding:
            self._pending += chunk[start:]
            # One more byte than the limit may be a CR that belongs to the line end.
            if len(self._pending) > self.max_line_bytes + 1:
                lines.append((bytes(self._pending[: self.max_line_bytes + 1]), True))
                self._pending.clear()
                self._discarding = True
        return lines

    def partial(self) -> bytes:
        """Bytes of an unfinished line (when the connection ends mid-line)."""
        return bytes(self._pending)

    def reset(self) -> None:
        self._pending.clear()
        self._discarding = False
