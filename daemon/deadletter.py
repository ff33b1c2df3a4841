"""The dead-letter file: one JSON line per record that could not be delivered, with its reason.

It is the daemon's last resort, so its own failure is fatal: a write that fails (ENOSPC, EIO) raises
`DeadLetterWriteFailed` and every later write is refused at once (`DeadLetterUnavailable`), so the caller
can count the record as lost, log its origin and stop the daemon. After `close`, writes are refused the
same way (`DeadLetterClosed`): a source abandoned at shutdown cannot write into a closed handle.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class DeadLetterUnavailable(Exception):
    """The dead-letter file cannot take this record; `__cause__` (if any) says why."""


class DeadLetterWriteFailed(DeadLetterUnavailable):
    """Writing or flushing the file failed; the file refuses every later write."""


class DeadLetterClosed(DeadLetterUnavailable):
    """The file was closed at shutdown."""


class DeadLetterFile:
    """Appends dead letters to a JSON-lines file; each line is flushed before `write` returns."""

    def __init__(self, path: Path, sink: str) -> None:
        self.path = path
        self.sink = sink
        self._lock = threading.Lock()
        self._failure: OSError | None = None
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        # Origins name files, and a file name need not be UTF-8 (Python hands it over with surrogate escapes):
        # such characters are written as \udcXX text so the line stays valid UTF-8 and the write cannot fail.
        self._handle = path.open("a", encoding="utf-8", errors="backslashreplace")

    @property
    def failure(self) -> OSError | None:
        """The error that broke the file, once a write failed."""
        return self._failure

    def write(self, *, data: bytes, source: str, origin: str, reason: str, detail: str) -> None:
        """Append one line and flush it; raises `DeadLetterUnavailable` when the record could not be kept."""
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "source": _text(source),
            "origin": _text(origin),
            "sink": self.sink,
            "reason": _text(reason),
            "detail": _text(detail),
        }
        try:
            entry["data"] = data.decode("utf-8")
        except UnicodeDecodeError:
            # Undecodable bytes are kept exactly, so the record can be inspected or repaired and replayed.
            entry["data_base64"] = base64.b64encode(data).decode("ascii")
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            if self._closed:
                raise DeadLetterClosed(f"{self.path} is closed (shutdown)")
            if self._failure is not None:
                raise DeadLetterWriteFailed(f"{self.path} failed earlier: {self._failure}") from self._failure
            try:
                self._handle.write(line)
                self._handle.flush()
            except OSError as exc:
                self._failure = exc
                raise DeadLetterWriteFailed(f"cannot write {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._handle.close()
            except OSError as exc:
                # Only a file that already failed holds unflushed bytes; that failure was reported then.
                self._failure = self._failure or exc


def _text(value: str) -> str:
    """`value` with any lone surrogate spelled out as `\\udcXX` text, so the line encodes as UTF-8.

    Origins name files, and a file name need not be UTF-8 (Python hands it over with surrogate escapes);
    exception messages in details can quote such text too. A write must not fail over how a name is spelled.
    """
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
