"""The dead-letter file: one JSON line per record that could not be delivered, with its reason."""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class DeadLetterFile:
    """Appends dead letters to a JSON-lines file; each line is flushed before `write` returns."""

    def __init__(self, path: Path, sink: str) -> None:
        self.path = path
        self.sink = sink
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def write(self, *, data: bytes, source: str, origin: str, reason: str, detail: str) -> None:
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "source": source,
            "origin": origin,
            "sink": self.sink,
            "reason": reason,
            "detail": detail,
        }
        try:
            entry["data"] = data.decode("utf-8")
        except UnicodeDecodeError:
            # Undecodable bytes are kept exactly, so the record can be inspected or repaired and replayed.
            entry["data_base64"] = base64.b64encode(data).decode("ascii")
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()
