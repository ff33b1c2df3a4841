"""The file source's checkpoint: which file (by identity and content fingerprint) was handed over how far.

Tokens: every emitted or rejected input carries `(key, position)`, `key` the file's identity as the string
"<device>:<inode>" and `position` the tuple `(offset, line, pass, generation)` naming where the next input
starts (`generation` tells apart two files that had the same identity within one run, see `FileInfo`);
a damaged gzip stream's rejection carries `(offset, line, pass, generation, True)`: nothing more to read.

Saved state (format 1):

    {"format": 1, "pass": P, "files": {"<dev>:<ino>": {"path": str, "offset": int, "line": int,
     "pass": int, "fingerprint": hex, "fingerprint_bytes": int}}}

(`"broken": true` is added for a damaged gzip file.) `fingerprint` is the sha256 of the file's first
`fingerprint_bytes` bytes (min(size, FINGERPRINT_BYTES) when it was first opened, widened while following
a file that was shorter then; of the decompressed content for gzip). How a saved entry is used when a
file with that identity is opened: `Checkpoint.start`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

from sources.base import CheckpointUnusable
from sources.file_read import GZIP_ERRORS, Identity, OpenFile

STATE_FORMAT = 1
# Enough to tell apart files that share an inode one after the other (log lines carry timestamps), small
# enough to cost nothing at open.
FINGERPRINT_BYTES = 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[0-9]+:[0-9]+")
_MAX_ERROR_KEY = 60  # characters of a foreign key quoted in a CheckpointUnusable message

# What `Checkpoint.start` found; file_truncated is also a follow-mode protocol message kind.
KIND_TRUNCATED = "file_truncated"
KIND_REPLACED = "file_replaced"


def key_of(identity: Identity) -> str:
    return f"{identity[0]}:{identity[1]}"


class FileInfo(NamedTuple):
    """What a run learnt of one file when it opened it; never changed afterwards (the checkpoint thread reads it).

    `generation` is new whenever the identity's content changed within the run (inode reuse, truncation):
    a committed position of an older generation describes a file that is not there any more.
    """

    path: str
    fingerprint: str
    fingerprint_bytes: int
    generation: int


@dataclass(frozen=True, slots=True)
class SavedFile:
    """One file's entry in a saved state."""

    path: str
    offset: int
    line: int
    pass_: int
    fingerprint: str
    fingerprint_bytes: int
    broken: bool = False

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "path": self.path,
            "offset": self.offset,
            "line": self.line,
            "pass": self.pass_,
            "fingerprint": self.fingerprint,
            "fingerprint_bytes": self.fingerprint_bytes,
        }
        if self.broken:
            entry["broken"] = True
        return entry


class Start(NamedTuple):
    """Where to start reading a file just opened, and what to report about it (kind, detail) if anything."""

    offset: int
    line: int
    broken: bool
    note: tuple[str, str] | None


def fingerprint(stream: BinaryIO, size: int) -> tuple[str, int]:
    """sha256 (hex) of the first `size` bytes of `stream` (fewer when it is shorter) and how many; rewinds.

    A gzip stream damaged within them gives the fingerprint of nothing: reading it reports the damage."""
    try:
        stream.seek(0)
        head = stream.read(size) if size else b""
    except GZIP_ERRORS:
        head = b""
    stream.seek(0)
    return hashlib.sha256(head).hexdigest(), len(head)


def _length_up_to(opened: OpenFile, offset: int) -> int:
    """The file's content length, or `offset` when it is at least that long.

    For gzip the content is decompressed up to `offset` (and the stream left there); a stream damaged before
    it counts as shorter, so it is read from its start, which reports the damage."""
    if not opened.compressed:
        return opened.size()
    try:
        opened.stream.seek(offset)
        return opened.stream.tell()
    except GZIP_ERRORS:
        return 0


def _int(value: Any, where: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise CheckpointUnusable(f"{where}: not an integer >= {minimum}: {str(value)[:_MAX_ERROR_KEY]!r}")
    return value


def parse_state(state: Mapping[str, Any]) -> tuple[int, dict[str, SavedFile]]:
    """(pass, files) of a saved state; CheckpointUnusable naming the first thing that does not fit."""
    if not isinstance(state, Mapping):
        raise CheckpointUnusable(f"not an object but a {type(state).__name__}")
    fmt = state.get("format")
    if fmt != STATE_FORMAT or isinstance(fmt, bool):
        raise CheckpointUnusable(f"format {str(fmt)[:_MAX_ERROR_KEY]!r}, not {STATE_FORMAT} (not a file source checkpoint?)")
    current = _int(state.get("pass"), "pass", 0)
    files = state.get("files")
    if not isinstance(files, Mapping):
        raise CheckpointUnusable("files: not an object")
    parsed: dict[str, SavedFile] = {}
    for key, entry in files.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise CheckpointUnusable(f"files: {str(key)[:_MAX_ERROR_KEY]!r} is not a <device>:<inode> key")
        if not isinstance(entry, Mapping):
            raise CheckpointUnusable(f"files.{key}: not an object")
        path, digest, broken = entry.get("path"), entry.get("fingerprint"), entry.get("broken", False)
        if not isinstance(path, str):
            raise CheckpointUnusable(f"files.{key}.path: not a string")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise CheckpointUnusable(f"files.{key}.fingerprint: not a sha256 in hex")
        if not isinstance(broken, bool):
            raise CheckpointUnusable(f"files.{key}.broken: not true or false")
        saved = SavedFile(
            path,
            _int(entry.get("offset"), f"files.{key}.offset", 0),
            _int(entry.get("line"), f"files.{key}.line", 1),
            _int(entry.get("pass"), f"files.{key}.pass", 0),
            digest,
            _int(entry.get("fingerprint_bytes"), f"files.{key}.fingerprint_bytes", 0),
            broken,
        )
        if saved.pass_ > current:
            raise CheckpointUnusable(f"files.{key}.pass: {saved.pass_} is after the state's pass {current}")
        if saved.fingerprint_bytes > FINGERPRINT_BYTES:
            raise CheckpointUnusable(f"files.{key}.fingerprint_bytes: over {FINGERPRINT_BYTES}")
        parsed[key] = saved
    return current, parsed


class Checkpoint:
    """The file source's side of checkpoints: what `resume` restored and what this run opened.

    Written only by the source's thread; `state` (the checkpoint thread) reads the two dicts, each replaced
    or changed by single assignments or deletions, which the GIL makes atomic.
    """

    def __init__(self) -> None:
        self.pass_ = 0  # the pass the restored state was in (0 without one)
        self.resumed: dict[str, SavedFile] = {}  # replaced, never changed in place
        self.files: dict[str, FileInfo] = {}
        self._generations = 0

    def resume(self, state: Mapping[str, Any]) -> None:
        self.pass_, self.resumed = parse_state(state)

    def start(self, opened: OpenFile, key: str, current_pass: int) -> Start:
        """Where a file just opened (and not read before in this pass) starts, by its saved entry if any.

        Same identity and fingerprint: at the saved offset (a saved offset at the end of the file means
        finished: nothing is read again). Now shorter than the saved offset (truncated while the daemon
        was down): from its start. Another fingerprint (the inode was reused): a new file, from its start.
        An entry of an older pass than `current_pass` (loop): read again, from its start.
        """
        saved = self.resumed.get(key)
        if saved is not None and saved.pass_ == current_pass:
            return self._start_saved(opened, key, saved)
        known = self.files.get(key)
        if known is None or fingerprint(opened.stream, known.fingerprint_bytes) != known[1:3]:
            self._remember(key, opened, *fingerprint(opened.stream, FINGERPRINT_BYTES))
        return Start(0, 1, False, None)

    def _start_saved(self, opened: OpenFile, key: str, saved: SavedFile) -> Start:
        same = fingerprint(opened.stream, saved.fingerprint_bytes) == (saved.fingerprint, saved.fingerprint_bytes)
        length = _length_up_to(opened, saved.offset)
        note: tuple[str, str] | None = None
        if length < saved.offset:
            note = (
                KIND_TRUNCATED,
                f"{opened.path}: {length} bytes, fewer than the checkpoint's {saved.offset}: read from its start",
            )
        elif not same:
            note = (KIND_REPLACED, f"{opened.path}: another file than the checkpoint's had its identity: read from its start")
        if note is not None:
            opened.stream.seek(0)
            self._forget_resumed(key)
            self._remember(key, opened, *fingerprint(opened.stream, FINGERPRINT_BYTES))
            return Start(0, 1, False, note)
        known = self.files.get(key)
        if known is None or known[1:3] != (saved.fingerprint, saved.fingerprint_bytes):
            self._generations += 1
            self.files[key] = FileInfo(str(opened.path), saved.fingerprint, saved.fingerprint_bytes, self._generations)
        return Start(saved.offset, saved.line, saved.broken, None)

    def renewed(self, key: str, opened: OpenFile) -> None:
        """The file was truncated in place while being read: what is committed of it no longer applies."""
        self._forget_resumed(key)
        self._remember(key, opened, *fingerprint_keeping(opened))

    def widen(self, key: str, opened: OpenFile, read: int) -> None:
        """Following: a file first opened short (often empty) gets the fingerprint of the bytes read since, up
        to FINGERPRINT_BYTES, so that a restart can tell it from another file given its inode later.

        Same generation: the new fingerprint describes the same file, a longer prefix of it (a truncation
        makes a new generation first). Plain files only (a gzip file is complete when first opened)."""
        info = self.files.get(key)
        if info is None or opened.compressed or info.fingerprint_bytes >= min(read, FINGERPRINT_BYTES):
            return
        head = os.pread(opened.raw.fileno(), min(read, FINGERPRINT_BYTES), 0)
        if hashlib.sha256(head[: info.fingerprint_bytes]).hexdigest() == info.fingerprint:
            self.files[key] = info._replace(fingerprint=hashlib.sha256(head).hexdigest(), fingerprint_bytes=len(head))

    def forget(self, keys: set[str]) -> None:
        """Following: these files are nowhere any more; their entries are dropped from the state."""
        for key in keys:
            self.files.pop(key, None)
        if any(key in self.resumed for key in keys):
            self.resumed = {key: saved for key, saved in self.resumed.items() if key not in keys}

    def keep_resumed(self, keys: set[str]) -> None:
        """Following, after the first look at the paths: restored entries of files not there are dropped."""
        if any(key not in keys for key in self.resumed):
            self.resumed = {key: saved for key, saved in self.resumed.items() if key in keys}

    def generation(self, key: str) -> int:
        return self.files[key].generation

    def state(self, committed: Mapping[Hashable, Any]) -> dict[str, Any]:
        """The restored entries, overwritten by this run's committed positions (see the module docstring)."""
        resumed, files = self.resumed, self.files
        entries: dict[str, SavedFile] = dict(resumed)
        current = self.pass_
        for key, position in committed.items():
            if not isinstance(key, str):
                continue  # not a token of this source
            info = files.get(key)
            if info is None or position[3] != info.generation:
                entries.pop(key, None)  # a file gone, or another one with its identity now: nothing to keep
                continue
            offset, line, pass_ = position[0], position[1], position[2]
            entries[key] = SavedFile(info.path, offset, line, pass_, info.fingerprint, info.fingerprint_bytes, len(position) > 4)
            current = max(current, pass_)
        return {"format": STATE_FORMAT, "pass": current, "files": {key: e.as_json() for key, e in entries.items()}}

    def _remember(self, key: str, opened: OpenFile, digest: str, length: int) -> None:
        self._generations += 1
        self.files[key] = FileInfo(str(opened.path), digest, length, self._generations)

    def _forget_resumed(self, key: str) -> None:
        if key in self.resumed:
            self.resumed = {k: saved for k, saved in self.resumed.items() if k != key}


def fingerprint_keeping(opened: OpenFile) -> tuple[str, int]:
    """The fingerprint of an open file being read, leaving its stream where it was."""
    at = opened.stream.tell()
    try:
        return fingerprint(opened.stream, FINGERPRINT_BYTES)
    finally:
        opened.stream.seek(at)


class FilePosition(NamedTuple):
    """How far one file was handed over: the next input starts at byte `offset`, on line `line`."""

    path: str
    device: int
    inode: int
    offset: int
    line: int


class Progress:
    """A file's progress, updated in place per input (cheaper than a new object per line on the hot path)."""

    __slots__ = ("at", "device", "inode", "key", "path")

    def __init__(self, path: str, identity: Identity, at: tuple[int, int, int, int]) -> None:
        self.path, (self.device, self.inode), self.key = path, identity, key_of(identity)
        # (offset, line, pass, generation): the checkpoint token's position (sources/file_checkpoint.py), in one
        # attribute so another thread never sees an offset with a stale line.
        self.at = at

    def snapshot(self) -> FilePosition:
        return FilePosition(self.path, self.device, self.inode, self.at[0], self.at[1])
