"""Shared by the source `x` tests: a recording SourceContext, the fake X fixture, helpers to run the source."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sources.x import XSource, XSourceConfig
from tests.fake_x import FakeX

DEADLINE_S = 10.0
# X's rules, to within 10 %.
TOLERANCE = 0.10


@dataclass
class XContext:
    """A SourceContext that records everything; `wait` returns at once (backoff delays are only recorded)."""

    name: str = "x"
    real_waits: bool = False
    emitted: list[tuple[bytes, Any, str]] = field(default_factory=list)
    emitted_at: list[float] = field(default_factory=list)  # monotonic time of each emit
    waits: list[float] = field(default_factory=list)  # what the source asked `wait` for
    rejected: list[tuple[bytes, str, str, str]] = field(default_factory=list)
    connections: list[tuple[bool, str]] = field(default_factory=list)
    reconnects: list[tuple[str, float, str, float]] = field(default_factory=list)  # reason, delay, detail, at
    messages: list[tuple[str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    stop_after_emits: int | None = None
    stop_after_reconnects: int | None = None

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def emit(self, data: bytes, event: Any, origin: str) -> bool:
        if self.stop.is_set():
            return False
        self.emitted.append((data, event, origin))
        self.emitted_at.append(time.monotonic())
        if self.stop_after_emits is not None and len(self.emitted) >= self.stop_after_emits:
            self.stop.set()
        return True

    def reject(self, data: bytes, origin: str, reason: str, detail: str) -> None:
        self.rejected.append((data, origin, reason, detail))

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        if self.real_waits:
            return self.stop.wait(seconds)
        return self.stop.is_set()

    def connection(self, connected: bool, detail: str = "") -> None:
        self.connections.append((connected, detail))

    def reconnecting(self, reason: str, delay_s: float, detail: str = "") -> None:
        self.reconnects.append((reason, delay_s, detail, time.monotonic()))
        if self.stop_after_reconnects is not None and len(self.reconnects) >= self.stop_after_reconnects:
            self.stop.set()

    def protocol_message(self, kind: str, detail: str) -> None:
        self.messages.append((kind, detail))

    def delays(self) -> list[float]:
        return [delay for _, delay, _, _ in self.reconnects]

    def everything_reported(self) -> str:
        return repr((self.connections, self.reconnects, self.messages, self.rejected))


def serve_fake_x() -> Iterator[FakeX]:
    """The body of each test module's `fake` fixture: a started fake X, stopped afterwards."""
    server = FakeX().start()
    yield server
    server.stop()


def make_source(fake: FakeX, **config: Any) -> XSource:
    settings_ = {"bearer_token": fake.token, "api_url": fake.url, "rules": [{"value": "cats", "tag": "t"}]} | config
    return XSource(XSourceConfig(**settings_))


def run_in_thread(source: XSource, ctx: XContext) -> threading.Thread:
    thread = threading.Thread(target=source.run, args=(ctx,), daemon=True)
    thread.start()
    return thread


def run_until_stopped(source: XSource, ctx: XContext, timeout: float = DEADLINE_S) -> None:
    thread = run_in_thread(source, ctx)
    thread.join(timeout)
    ctx.stop.set()
    thread.join(2)
    assert not thread.is_alive(), "the source did not stop"


def lines(*records: bytes) -> bytes:
    return b"".join(r + b"\r\n" for r in records)
