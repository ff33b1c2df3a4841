"""Server-Sent Events for the `mastodon` source: a bounded line parser and a reader thread per connection.

The parser (`SseParser`) turns the bytes of a `text/event-stream` body into events and comments. It never
raises and never holds more than about `max_event_bytes` of one event: a longer event is cut off and handed
over marked `oversize` (the source rejects it), a line without end is dropped up to its newline. Lines end
with LF or CRLF (the only endings Mastodon's streaming server writes; a lone CR is kept as data).

The reader (`StreamReader`) opens the stream and reads it in its own daemon thread, handing what it got to
the source through a bounded queue. Reads block for up to the stall timeout (a socket timeout ends the
socket, so the source cannot poll it with short timeouts); the source's own loop polls the queue every
fraction of a second, so it notices a stop or a stall on time whatever the socket does.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import urllib3

# Bytes per read: SSE events of a few KiB arrive whole; larger ones in a few reads.
READ_CHUNK_BYTES = 64 * 1024
# Chunks the reader may queue before it waits for the source (which may be blocked on a full buffer):
# the connection then stalls on the server's side (TCP back-pressure) instead of filling memory.
QUEUE_CHUNKS = 256
# How long the reader waits for room in the queue before it looks whether it was closed.
_QUEUE_PUT_SLICE_S = 0.25
# Bytes of an error response kept for the message (Mastodon answers errors with {"error": "..."}).
ERROR_BODY_BYTES = 4096
# The field name, colon and space in front of a data line's value.
_FIELD_OVERHEAD_BYTES = 16


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its name (`message` when the stream named none) and its data lines joined by LF."""

    name: str
    data: bytes
    oversize: bool = False


@dataclass(frozen=True, slots=True)
class SseComment:
    """A comment line (`:thump` is Mastodon's heartbeat)."""

    text: bytes


SseItem = SseEvent | SseComment


@dataclass
class SseParser:
    """Incremental `text/event-stream` parser with a bound on each event's size (see the module docstring)."""

    max_event_bytes: int
    _buffer: bytearray = field(default_factory=bytearray)
    _data: list[bytes] = field(default_factory=list)
    _data_bytes: int = 0
    _name: bytes = b""
    _oversize: bool = False
    _discarding: bool = False  # inside a line longer than any event may be: dropped up to its newline

    def feed(self, chunk: bytes) -> list[SseItem]:
        """The events and comments completed by `chunk` (and what came before it)."""
        items: list[SseItem] = []
        self._buffer += chunk
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buffer[start:end])
            start = end + 1
            if self._discarding:
                self._discarding = False
                continue
            item = self._line(line[:-1] if line.endswith(b"\r") else line)
            if item is not None:
                items.append(item)
        del self._buffer[:start]
        if len(self._buffer) > self.max_event_bytes + _FIELD_OVERHEAD_BYTES:
            # No newline in sight: whatever this line is, it cannot belong to an acceptable event.
            self._buffer.clear()
            self._discarding = True
            self._oversize = True
        return items

    def _line(self, line: bytes) -> SseItem | None:
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return SseComment(line[1:])
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"event":
            self._name = value
        elif name == b"data" and not self._oversize:  # once too large, the event is only waited out
            size = self._data_bytes + len(value) + (1 if self._data else 0)
            if size > self.max_event_bytes:
                self._oversize = True
            else:
                self._data.append(value)
                self._data_bytes = size
        # `id`, `retry` and unknown fields carry nothing Mastodon's stream needs (it has no resume cursor).
        return None

    def _dispatch(self) -> SseEvent | None:
        has_data = bool(self._data) or self._oversize
        event = SseEvent(self._name.decode("utf-8", "backslashreplace") or "message", b"\n".join(self._data), self._oversize)
        self._data, self._data_bytes, self._name, self._oversize = [], 0, b"", False
        return event if has_data else None


@dataclass(frozen=True, slots=True)
class Opened:
    """The server answered: its status, headers and (for anything but 200) the start of its body."""

    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Chunk:
    data: bytes


@dataclass(frozen=True, slots=True)
class Ended:
    """The connection ended: `error` is None when the server closed the stream cleanly."""

    error: BaseException | None


ReaderItem = Opened | Chunk | Ended


class StreamReader(threading.Thread):
    """Opens one streaming connection and reads it until it ends or `close()` is called."""

    def __init__(self, pool: urllib3.PoolManager, url: str, headers: dict[str, str], connect_s: float, read_s: float) -> None:
        super().__init__(name="mastodon-stream", daemon=True)
        self.items: queue.Queue[ReaderItem] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._pool = pool
        self._url = url
        self._headers = headers
        self._timeout = urllib3.Timeout(connect=connect_s, read=read_s)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._response: Any = None

    def run(self) -> None:
        try:
            response = self._pool.request(
                "GET",
                self._url,
                headers=self._headers,
                preload_content=False,
                retries=False,
                timeout=self._timeout,
                redirect=False,
            )
        except Exception as exc:  # noqa: BLE001 - every failure ends up with the source, which reconnects
            self._put(Ended(exc))
            return
        with self._lock:
            self._response = response
            closed = self._closed.is_set()
        if closed:
            response.release_conn()
            return
        try:
            headers = {k.lower(): v for k, v in response.headers.items()}
            if response.status != 200:
                self._put(Opened(response.status, headers, response.read(ERROR_BODY_BYTES)))
                self._put(Ended(None))
                return
            self._put(Opened(200, headers))
            while not self._closed.is_set():
                data = response.read1(READ_CHUNK_BYTES)
                if not data:
                    self._put(Ended(None))
                    return
                self._put(Chunk(data))
        except Exception as exc:  # noqa: BLE001 - as above
            self._put(Ended(exc))
        finally:
            self._shutdown(response)

    def close(self) -> None:
        """Stop reading and drop the connection (also unblocks a read in progress)."""
        with self._lock:
            self._closed.set()
            response = self._response
        if response is not None:
            self._shutdown(response)

    @staticmethod
    def _shutdown(response: Any) -> None:
        try:
            # urllib3 >= 2.3: shuts the socket down, which also wakes a read blocked in another thread.
            shutdown = getattr(response, "shutdown", None)
            if callable(shutdown):
                shutdown()
            response.close()
        except Exception:  # noqa: BLE001, S110 - the connection is being discarded either way
            pass

    def _put(self, item: ReaderItem) -> None:
        while not self._closed.is_set():
            try:
                self.items.put(item, timeout=_QUEUE_PUT_SLICE_S)
                return
            except queue.Full:
                continue
