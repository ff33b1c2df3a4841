"""Shared pieces of the spool tests: an events recorder and a spool factory."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.durable import LOCAL, FileSystem
from daemon.spool import Spool, SpooledRecord
from sources.base import SpoolSettings

NO_STOP = threading.Event()
# The syncer of an "interval" spool with this interval never runs during a test: fsyncs happen only where
# the test calls sync(), so every mutating step is the test's own (deterministic crash points).
NEVER_S = 3600.0


@dataclass
class RecordedEvents:
    """Every event a spool reported, by name."""

    fsyncs: list[float] = field(default_factory=list)
    dropped: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    blocked: list[float] = field(default_factory=list)
    write_failed: list[OSError] = field(default_factory=list)
    recovered: list[tuple[int, int]] = field(default_factory=list)
    corrupt: list[tuple[str, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def spool_fsync(self, seconds: float) -> None:
        with self.lock:
            self.fsyncs.append(seconds)

    def spool_dropped(self, records: int, first_origin: str | None, last_origin: str | None) -> None:
        self.dropped.append((records, first_origin, last_origin))

    def spool_blocked(self, seconds: float) -> None:
        self.blocked.append(seconds)

    def spool_write_failed(self, error: OSError) -> None:
        with self.lock:
            self.write_failed.append(error)

    def spool_recovered(self, records: int, bytes: int) -> None:  # noqa: A002 - the protocol's name
        self.recovered.append((records, bytes))

    def spool_corrupt(self, segment: str, offset: int, detail: str) -> None:
        self.corrupt.append((segment, offset, detail))


def make_spool(
    directory: Path,
    fs: FileSystem = LOCAL,
    *,
    fsync: str = "interval",
    interval_s: float = NEVER_S,
    max_bytes: int = 1024**3,
    segment_bytes: int = 64 * 1024**2,
    when_full: str = "block",
    events: RecordedEvents | None = None,
    clock: Any = None,
) -> tuple[Spool, RecordedEvents]:
    events = events if events is not None else RecordedEvents()
    settings = SpoolSettings(max_bytes=max_bytes, segment_bytes=segment_bytes, when_full=when_full)  # type: ignore[arg-type]
    extra: dict[str, Any] = {} if clock is None else {"clock": clock}
    return Spool(directory, settings, fsync, interval_s, events, fs=fs, **extra), events


def read_all(spool: Spool, timeout_s: float = 0.0, batch: int = 1000) -> list[SpooledRecord]:
    """Every record the spool has to read now (waiting up to timeout_s for the first batch only)."""
    out: list[SpooledRecord] = []
    while True:
        got = spool.read(batch, timeout_s if not out else 0.0)
        if not got:
            return out
        out.extend(got)


def record(n: int) -> bytes:
    return b'{"n": %d, "text": "tweet %d"}' % (n, n)


def abandon(spool: Spool) -> None:
    """The process died: stop the spool's thread and let go of its files without another write or fsync."""
    spool._stop_threads()
    with spool._lock:
        spool._files.close_all()
        spool._close_reader()
