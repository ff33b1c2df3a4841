"""The checkpoint store: one JSON file per replayable source in `state/checkpoints/`, replaced atomically.

A checkpoint file is an envelope around the source's own state:

    {"version": 1, "source": "<name>", "type": "<source type>", "destination": "<sink destination>" | null,
     "saved_at": "<UTC ISO time>", "state": {...}}

Load rule (documented in the README): a missing file means "start from the beginning". A file that cannot be
used - unreadable, not JSON, not this envelope, another version, written for another source name or source
type, or for another destination (a checkpoint of records delivered to a stream that no longer exists would
skip records the new stream never got) - is never deleted and never silently ignored: it is renamed to
`<name>.json.unusable-<UTC stamp>` (kept for inspection), reported with the reason, and the source starts from
the beginning. At-least-once wins over "no duplicates": an unusable checkpoint means a full replay.

Saving goes through `atomic_write` (temp file, fsync, rename, directory fsync): after a crash or power loss at
any step the file holds the previous or the new checkpoint. A save whose state equals the last one saved (or
loaded) for that source writes nothing, so an idle daemon does not fsync every interval.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from daemon.durable import LOCAL, FileSystem, atomic_write
from daemon.statedir import file_safe_name

CHECKPOINT_VERSION = 1
CHECKPOINT_SUFFIX = ".json"
# `<name>.json.unusable-<stamp>`: a set-aside checkpoint, kept for inspection and never read again.
UNUSABLE_INFIX = ".unusable-"
ENVELOPE_KEYS = frozenset({"version", "source", "type", "destination", "saved_at", "state"})
# How much of a broken file's text a reason quotes at most (the file itself is kept).
REASON_EXCERPT_CHARS = 80


class CheckpointWriteFailed(Exception):
    """A checkpoint could not be saved; `__cause__` says why. The previous checkpoint (if any) is still in place."""


class CheckpointEvents(Protocol):
    """What the store reports (daemon/telemetry_state.py logs and counts each)."""

    def checkpoint_missing(self, source: str) -> None: ...

    def checkpoint_loaded(self, source: str, path: Path, saved_at: str) -> None: ...

    def checkpoint_unusable(self, source: str, path: Path, reason: str, moved_to: Path | None) -> None: ...

    def checkpoint_saved(self, source: str, seconds: float) -> None: ...

    def checkpoint_write_failed(self, source: str, error: Exception) -> None: ...


class _Unusable(Exception):
    """Why a checkpoint file cannot be used (the message is the reason reported)."""


class CheckpointStore:
    """Loads and saves the checkpoints of a daemon's sources; safe to call from the checkpoint thread."""

    def __init__(self, directory: Path, events: CheckpointEvents, fs: FileSystem = LOCAL) -> None:
        self.directory = directory
        self._events = events
        self._fs = fs
        self._lock = threading.Lock()
        # Per source, the canonical JSON of what its file holds (as loaded or last saved): a save of equal state
        # is skipped. Text, not the dict: the source may mutate the objects it handed over.
        self._on_disk: dict[str, str] = {}
        self._directory_checked = False

    def path(self, source: str) -> Path:
        return self.directory / (file_safe_name(source) + CHECKPOINT_SUFFIX)

    def load(self, source: str, source_type: str, destination: str | None) -> dict[str, Any] | None:
        """The state saved for `source`, or None to start from the beginning (missing or set aside, reported)."""
        path = self.path(source)
        with self._lock:
            self._on_disk.pop(source, None)
            if not self._fs.exists(path):
                self._events.checkpoint_missing(source)
                return None
            try:
                envelope = _parse(self._fs.read_bytes(path))
                _check(envelope, source, source_type, destination)
                canonical = _canonical(source_type, destination, envelope["state"])
            except (ValueError, RecursionError) as exc:  # parsed, but too deep to encode again
                self._set_aside(source, path, f"corrupt: {type(exc).__name__}: {_short(exc)}")
                return None
            except _Unusable as exc:
                self._set_aside(source, path, str(exc))
                return None
            except OSError as exc:
                self._set_aside(source, path, f"unreadable: {exc}")
                return None
            state: dict[str, Any] = envelope["state"]
            self._on_disk[source] = canonical
            self._events.checkpoint_loaded(source, path, envelope["saved_at"])
            return state

    def save(self, source: str, source_type: str, destination: str | None, state: dict[str, Any]) -> None:
        """Replace the checkpoint of `source` with `state` (atomically; nothing when unchanged).

        Raises `CheckpointWriteFailed` (after reporting it) when the state is not JSON or the write failed.
        """
        path = self.path(source)
        with self._lock:
            try:
                canonical = _canonical(source_type, destination, state)
            except (TypeError, ValueError, RecursionError) as exc:  # a source bug: say so, do not crash the checkpoint thread
                self._events.checkpoint_write_failed(source, exc)
                raise CheckpointWriteFailed(f"{path}: state is not JSON-able: {exc}") from exc
            if self._on_disk.get(source) == canonical:
                return
            envelope = {
                "version": CHECKPOINT_VERSION,
                "source": source,
                "type": source_type,
                "destination": destination,
                "saved_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "state": state,
            }
            # ensure_ascii: a file name that is not UTF-8 (surrogate escapes) round-trips as \udcXX escapes.
            data = (json.dumps(envelope, ensure_ascii=True, sort_keys=True) + "\n").encode("ascii")
            started = time.monotonic()
            try:
                self._ensure_directory()
                atomic_write(self._fs, path, data)
            except OSError as exc:
                # The file now holds the old or the new state: unknown, so the next save writes again.
                self._on_disk.pop(source, None)
                self._events.checkpoint_write_failed(source, exc)
                raise CheckpointWriteFailed(f"cannot save {path}: {exc}") from exc
            self._on_disk[source] = canonical
            self._events.checkpoint_saved(source, time.monotonic() - started)

    def set_aside(self, source: str, reason: str) -> None:
        """Move the checkpoint of `source` aside with `reason` (the source raised CheckpointUnusable on its state)."""
        with self._lock:
            self._on_disk.pop(source, None)
            self._set_aside(source, self.path(source), reason)

    def _ensure_directory(self) -> None:
        if self._directory_checked:
            return
        if not self._fs.exists(self.directory):
            self._fs.mkdir(self.directory)
            self._fs.fsync_dir(self.directory.parent)
        self._directory_checked = True

    def _set_aside(self, source: str, path: Path, reason: str) -> None:
        moved_to: Path | None = None
        if self._fs.exists(path):
            target = self._aside_name(path)
            try:
                self._fs.replace(path, target)
                self._fs.fsync_dir(path.parent)
                moved_to = target
            except OSError as exc:
                # Not fatal: the source starts from the beginning and the next save replaces the file.
                reason = f"{reason}; could not move it aside: {exc}"
        self._events.checkpoint_unusable(source, path, reason, moved_to)

    def _aside_name(self, path: Path) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = path.with_name(f"{path.name}{UNUSABLE_INFIX}{stamp}")
        number = 1
        while self._fs.exists(target):  # never overwrite an earlier set-aside file: it is evidence
            number += 1
            target = path.with_name(f"{path.name}{UNUSABLE_INFIX}{stamp}-{number}")
        return target


def _canonical(source_type: str, destination: str | None, state: dict[str, Any]) -> str:
    return json.dumps([source_type, destination, state], sort_keys=True, ensure_ascii=True, allow_nan=False)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8, an int of too many digits
        excerpt = raw[:REASON_EXCERPT_CHARS].decode("utf-8", "backslashreplace")
        raise _Unusable(f"corrupt: not JSON ({type(exc).__name__}: {_short(exc)}) in {excerpt!r}") from None
    if not isinstance(document, dict):
        raise _Unusable(f"not a checkpoint: a JSON {type(document).__name__}, not an object")
    keys = set(document)
    if keys != ENVELOPE_KEYS:
        missing, extra = sorted(ENVELOPE_KEYS - keys), sorted(keys - ENVELOPE_KEYS)
        raise _Unusable(f"not a checkpoint: missing keys {missing}, unexpected keys {extra}")
    return document


def _refuse_constant(name: str) -> None:
    """NaN and Infinity are not JSON (a checkpoint holding one could never be saved again)."""
    raise ValueError(f"{name} is not JSON")


def _check(envelope: dict[str, Any], source: str, source_type: str, destination: str | None) -> None:
    version = envelope["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version != CHECKPOINT_VERSION:
        raise _Unusable(f"version {version!r}: this daemon reads version {CHECKPOINT_VERSION}")
    for key, kind in (("source", str), ("type", str), ("saved_at", str), ("state", dict)):
        if not isinstance(envelope[key], kind):
            raise _Unusable(f"not a checkpoint: {key} is a {type(envelope[key]).__name__}, not a {kind.__name__}")
    saved_destination = envelope["destination"]
    if saved_destination is not None and not isinstance(saved_destination, str):
        raise _Unusable(f"not a checkpoint: destination is a {type(saved_destination).__name__}")
    if envelope["source"] != source:
        raise _Unusable(f"written for source {envelope['source']!r}, not {source!r}")
    if envelope["type"] != source_type:
        raise _Unusable(f"written for a {envelope['type']!r} source, this one is {source_type!r}")
    if destination is not None and saved_destination != destination:
        raise _Unusable(f"foreign: written for {saved_destination}, now {destination}")


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) <= REASON_EXCERPT_CHARS else text[:REASON_EXCERPT_CHARS] + "..."
