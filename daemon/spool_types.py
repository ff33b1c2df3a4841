"""The spool's public records and events (daemon/spool.py re-exports them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    data: bytes
    event: Any | None  # the appended parsed event when served from memory, None when read from disk
    origin: str
    position: list[int]  # [segment id, end offset]: what to commit once this record is done
    appended_at: float


@dataclass(frozen=True, slots=True)
class SpoolStats:
    records: int  # not yet committed (unread and in flight)
    bytes: int  # their frame bytes
    oldest_age_s: float  # age of the oldest of them (0 when none)
    disk_bytes: int = 0  # the segment files (what max_bytes bounds), committed records not yet deleted included


class SpoolEvents(Protocol):
    def spool_fsync(self, seconds: float) -> None: ...

    def spool_dropped(self, records: int, first_origin: str | None, last_origin: str | None) -> None: ...

    def spool_blocked(self, seconds: float) -> None: ...

    def spool_write_failed(self, error: OSError) -> None: ...

    def spool_recovered(self, records: int, bytes: int) -> None: ...  # noqa: A002 - the sheet's name

    def spool_corrupt(self, segment: str, offset: int, detail: str) -> None: ...


@dataclass(slots=True)
class HotRecord:
    """A recent append kept in memory (with its parsed event) for a feeder that keeps up."""

    segment: int
    start: int
    end: int
    appended_at: float
    origin: str
    data: bytes
    event: Any
