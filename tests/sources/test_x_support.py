"""Shared by the source `x` tests: a recording SourceContext for it, the fake X fixture, helpers to run the source."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from sources.x import XSource, XSourceConfig
from tests.fake_x import FakeX
from tests.fakes import RecordingContext

DEADLINE_S = 10.0
# X's rules, to within 10 %.
TOLERANCE = 0.10


def x_context(max_wait_s: float | None = 0.0, **options: Any) -> RecordingContext:
    """A recording context named like the source; its `wait` returns at once (backoff delays are only recorded)
    unless `max_wait_s` says otherwise (None: it sleeps as asked)."""
    return RecordingContext(name="x", max_wait_s=max_wait_s, **options)


def serve_fake_x() -> Iterator[FakeX]:
    """The body of each test module's `fake` fixture: a started fake X, stopped afterwards."""
    server = FakeX().start()
    yield server
    server.stop()


def make_source(fake: FakeX, **config: Any) -> XSource:
    settings_ = {"bearer_token": fake.token, "api_url": fake.url, "rules": [{"value": "cats", "tag": "t"}]} | config
    return XSource(XSourceConfig(**settings_))


def run_in_thread(source: XSource, ctx: RecordingContext) -> threading.Thread:
    thread = threading.Thread(target=source.run, args=(ctx,), daemon=True)
    thread.start()
    return thread


def run_until_stopped(source: XSource, ctx: RecordingContext, timeout: float = DEADLINE_S) -> None:
    thread = run_in_thread(source, ctx)
    thread.join(timeout)
    ctx.stop.set()
    thread.join(2)
    assert not thread.is_alive(), "the source did not stop"


def lines(*records: bytes) -> bytes:
    return b"".join(r + b"\r\n" for r in records)
