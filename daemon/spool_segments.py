"""The spool's on-disk format: segment files of framed records, and the commit file.

A segment is `<id, 20 digits>.seg`:

    header   8 bytes MAGIC (format name + version) | u64 segment id          (big-endian)
    frame    u32 payload length | u32 CRC-32 of (length bytes + payload) | payload
    payload  f64 appended_at (Unix seconds) | u16 origin length | origin (UTF-8) | data

Segments are only ever appended to, and a recovered segment is never appended to again (appends go to a new
one), so a torn frame can only be a segment's last: recovery cuts a segment at its first frame that is short
or fails its CRC. The CRC covers the length too, so a torn or flipped length cannot make the scanner read a
stranger's bytes as a frame. A record's position is `[segment id, offset of the end of its frame]`.

The commit file `commit` holds `{"version": 1, "segment": id, "offset": end}`: every record at or before that
position is done. It is written with `atomic_write`, so it is always the old or the new one.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from daemon.durable import FileSystem

MAGIC = b"TPSPOOL\x01"
_HEADER = struct.Struct(">8sQ")
HEADER_BYTES = _HEADER.size
_FRAME = struct.Struct(">II")
FRAME_HEADER_BYTES = _FRAME.size
_PAYLOAD = struct.Struct(">dH")
_PAYLOAD_FIXED = _PAYLOAD.size
_ORIGIN_LEN = struct.Struct(">H")
# An origin is a short label ("x:filtered-stream", "file:/path:12"); longer ones are cut to fit the u16.
ORIGIN_MAX_BYTES = 1024
MAX_PAYLOAD_BYTES = 2**32 - 1
SEGMENT_SUFFIX = ".seg"
COMMIT_NAME = "commit"
COMMIT_VERSION = 1
# Recovery reads a segment this much at a time: memory stays bounded whatever the segment size.
SCAN_CHUNK_BYTES = 1024 * 1024
# The feeder reads a batch at a time and may stop after any frame: smaller reads waste less.
READ_CHUNK_BYTES = 64 * 1024


class SpoolFormatError(ValueError):
    """Bytes that are not a spool segment header or a commit file."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One record as stored: `start`/`end` are the frame's offsets in its segment."""

    start: int
    end: int
    appended_at: float
    origin: str
    data: bytes


def segment_name(segment_id: int) -> str:
    return f"{segment_id:020d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """The id of a segment file name, or None for any other file (the commit file, temporaries)."""
    stem, dot, suffix = name.partition(".")
    if not dot or "." + suffix != SEGMENT_SUFFIX or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def encode_header(segment_id: int) -> bytes:
    return _HEADER.pack(MAGIC, segment_id)


def decode_header(data: bytes, segment_id: int) -> None:
    """Raise SpoolFormatError unless `data` is the header of segment `segment_id`."""
    if len(data) < HEADER_BYTES:
        raise SpoolFormatError(f"header torn ({len(data)} of {HEADER_BYTES} bytes)")
    magic, stored_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SpoolFormatError(f"not a spool segment (magic {magic!r})")
    if stored_id != segment_id:
        raise SpoolFormatError(f"header names segment {stored_id}, file name {segment_id}")


def _encode_origin(origin: str) -> bytes:
    raw = origin.encode("utf-8", "replace")
    if len(raw) > ORIGIN_MAX_BYTES:
        raw = raw[:ORIGIN_MAX_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return raw


def encode_frame(appended_at: float, origin: str, data: bytes) -> bytes:
    """One record's frame; ValueError when the payload exceeds the u32 length."""
    raw_origin = _encode_origin(origin)
    payload_len = _PAYLOAD_FIXED + len(raw_origin) + len(data)
    if payload_len > MAX_PAYLOAD_BYTES:
        raise ValueError(f"record of {len(data)} bytes is too large for a spool frame")
    length = struct.pack(">I", payload_len)
    payload = _PAYLOAD.pack(appended_at, len(raw_origin)) + raw_origin + data
    crc = zlib.crc32(payload, zlib.crc32(length))
    return length + struct.pack(">I", crc) + payload


class FrameReader:
    """Frames of one segment from `offset` up to `limit` (bytes known good); stops at the first bad frame.

    After iteration `error` says why it stopped early (None: it reached `limit` or a clean end of file) and
    `offset` is the end of the last good frame, where a torn or corrupt tail begins. The file is read a chunk
    at a time (frames are parsed out of memory: one read call per chunk, not two per frame); a frame larger
    than a chunk is read whole, but never past the end of the file, so a damaged length cannot ask for more.
    """

    def __init__(self, handle: BinaryIO, offset: int, limit: int | None = None, chunk_bytes: int = SCAN_CHUNK_BYTES) -> None:
        self._handle = handle
        self._chunk = chunk_bytes
        self.offset = offset
        self._limit = limit
        self.error: str | None = None
        handle.seek(offset)

    def _fill(self, buffer: bytes, pos: int, need: int) -> bytes:
        """`buffer[pos:]` plus what the file holds next, at least `need` bytes when it has them."""
        parts = [buffer[pos:]]
        have = len(buffer) - pos
        while have < need:
            want = max(need - have, self._chunk)
            if self._limit is not None:
                want = min(want, self._limit - self.offset - have)
            chunk = self._handle.read(want) if want > 0 else b""
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def raw(self) -> Iterator[tuple[int, memoryview]]:
        """(start offset, payload) of each good frame; the payload is a view into the chunk read (kept alive by it)."""
        buffer, pos = b"", 0
        limit = self._limit
        while limit is None or self.offset < limit:
            if len(buffer) - pos < FRAME_HEADER_BYTES:
                buffer, pos = self._fill(buffer, pos, FRAME_HEADER_BYTES), 0
                if len(buffer) < FRAME_HEADER_BYTES:
                    if buffer:
                        self.error = f"frame header torn ({len(buffer)} of {FRAME_HEADER_BYTES} bytes)"
                    return
            length, crc = _FRAME.unpack_from(buffer, pos)
            size = FRAME_HEADER_BYTES + length
            if length < _PAYLOAD_FIXED or (limit is not None and self.offset + size > limit):
                self.error = f"frame length {length} impossible here"
                return
            if len(buffer) - pos < size:
                buffer, pos = self._fill(buffer, pos, size), 0
                if len(buffer) < size:
                    self.error = f"frame torn ({len(buffer) - FRAME_HEADER_BYTES} of {length} payload bytes)"
                    return
            view = memoryview(buffer)
            payload = view[pos + FRAME_HEADER_BYTES : pos + size]
            if zlib.crc32(payload, zlib.crc32(view[pos : pos + 4])) != crc:
                self.error = "frame CRC mismatch"
                return
            origin_len = _ORIGIN_LEN.unpack_from(payload, 8)[0]
            if _PAYLOAD_FIXED + origin_len > length:
                self.error = "origin length past the payload"
                return
            start = self.offset
            self.offset = start + size
            pos += size
            yield start, payload

    def __iter__(self) -> Iterator[Frame]:
        for start, payload in self.raw():
            yield Frame(start, self.offset, *decode_payload(payload))


def decode_payload(payload: memoryview) -> tuple[float, str, bytes]:
    """appended_at, origin and data of a good frame's payload."""
    appended_at, origin_len = _PAYLOAD.unpack_from(payload)
    origin = bytes(payload[_PAYLOAD_FIXED : _PAYLOAD_FIXED + origin_len]).decode("utf-8", "replace")
    return appended_at, origin, bytes(payload[_PAYLOAD_FIXED + origin_len :])


def payload_origin(payload: memoryview) -> tuple[float, str]:
    """The appended_at and origin of a (good) frame payload, without copying its data."""
    appended_at, origin_len = _PAYLOAD.unpack_from(payload)
    return appended_at, bytes(payload[_PAYLOAD_FIXED : _PAYLOAD_FIXED + origin_len]).decode("utf-8", "replace")


@dataclass(slots=True)
class ScannedSegment:
    """What recovery learned of one segment: its good end, its records after `skip_to`, where it went bad."""

    segment_id: int
    end: int  # end of the last good frame (HEADER_BYTES when it holds none)
    resume_at: int  # end of the last good frame at or before skip_to: where reading resumes
    records: int  # good records after skip_to
    frame_bytes: int  # their frame bytes
    first_appended_at: float | None
    first_origin: str | None
    last_origin: str | None
    error: str | None  # why the scan stopped before the end of the file, None when it did not
    file_size: int


def scan_segment(fs: FileSystem, path: Path, segment_id: int, skip_to: int) -> ScannedSegment:
    """Read a segment's frames to find its good end; records ending at or before `skip_to` are not counted.

    Raises SpoolFormatError when the header itself is unusable.
    """
    file_size = fs.size(path)
    with fs.open_read(path) as handle:
        decode_header(handle.read(HEADER_BYTES), segment_id)
        scanned = ScannedSegment(segment_id, HEADER_BYTES, HEADER_BYTES, 0, 0, None, None, None, None, file_size)
        reader = FrameReader(handle, HEADER_BYTES)
        last: memoryview | None = None
        for start, payload in reader.raw():
            if reader.offset <= skip_to:
                scanned.resume_at = reader.offset
                continue
            if scanned.first_origin is None:
                scanned.first_appended_at, scanned.first_origin = payload_origin(payload)
            last = payload
            scanned.records += 1
            scanned.frame_bytes += reader.offset - start
        if last is not None:
            scanned.last_origin = payload_origin(last)[1]
        scanned.end = reader.offset
        scanned.error = reader.error
        if scanned.error is None and scanned.end < file_size:
            scanned.error = "bytes after the last frame"
    return scanned


def encode_commit(segment_id: int, offset: int) -> bytes:
    return json.dumps({"version": COMMIT_VERSION, "segment": segment_id, "offset": offset}).encode() + b"\n"


def decode_commit(data: bytes) -> tuple[int, int]:
    """The (segment, offset) of a commit file; SpoolFormatError for anything else."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise SpoolFormatError(f"commit file is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != COMMIT_VERSION:
        raise SpoolFormatError(f"commit file has no version {COMMIT_VERSION} envelope")
    segment, offset = doc.get("segment"), doc.get("offset")
    if type(segment) is not int or type(offset) is not int or segment < 0 or offset < 0:
        raise SpoolFormatError("commit file segment/offset are not non-negative integers")
    return segment, offset
