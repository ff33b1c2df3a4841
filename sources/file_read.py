"""Reading a file source's inputs: plain or gzip files, lines with their byte offsets, CSV records over lines.

Offsets count bytes of the file's content (for a `.gz` file: of the decompressed stream), so a position
`(path, device, inode, offset)` names the start of one input exactly and `seek` resumes there.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from sources.parsing import UTF8_BOM

if TYPE_CHECKING:
    from sources.file_checkpoint import Progress
    from sources.file_formats import CsvDecoder

GZIP_MAGIC = b"\x1f\x8b"
# RFC 1952: the magic, compression method 8 (deflate, the only one defined), then a flag byte whose top three
# bits are reserved and zero. Sniffing all of it keeps a text file that merely opens with 0x1f 0x8b a text file
# (its bytes are then dead-lettered as they are, not lost as "corrupt gzip").
_GZIP_DEFLATE = 8
_GZIP_RESERVED_FLAGS = 0xE0
# What a damaged gzip stream raises while being read: cut short (EOFError), bad header or CRC
# (BadGzipFile), bad deflate data (zlib.error).
GZIP_ERRORS: tuple[type[BaseException], ...] = (EOFError, gzip.BadGzipFile, zlib.error)
_COUNT_CHUNK_BYTES = 1024 * 1024
_QUOTE = b'"'

Identity = tuple[int, int]


class RawInput(NamedTuple):
    """One input as read, before any parsing: where it starts and ends, its first line number, its bytes."""

    offset: int
    end: int
    line: int
    data: bytes  # without its line ending (and without a byte-order mark at the start of the file)
    too_long: bool  # longer than the limit: `data` holds only its first limit + 1 bytes


# RawInput's own __new__ is Python code (a frame per line); tuple.__new__ builds the same tuple in C.
_new_raw = tuple.__new__


def identity(stat: os.stat_result) -> Identity:
    return stat.st_dev, stat.st_ino


def is_gzip(path: Path, handle: BinaryIO) -> bool:
    """By extension, or by a gzip header (a rotated `app.log.1` compressed later keeps its name)."""
    if path.suffix == ".gz":
        return True
    start = handle.read(len(GZIP_MAGIC) + 2)
    handle.seek(0)
    return looks_like_gzip(start)


def looks_like_gzip(start: bytes) -> bool:
    """Whether `start` (a file's first 4 bytes) is a gzip member header."""
    return (
        len(start) == len(GZIP_MAGIC) + 2
        and start.startswith(GZIP_MAGIC)
        and start[2] == _GZIP_DEFLATE
        and not start[3] & _GZIP_RESERVED_FLAGS
    )


class OpenFile:
    """A file opened for reading: its identity (of the file on disk) and a stream of its content."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw: BinaryIO = path.open("rb")
        try:
            self.identity = identity(os.fstat(self.raw.fileno()))
            self.compressed = is_gzip(path, self.raw)
            self.stream: BinaryIO = (
                gzip.GzipFile(fileobj=self.raw, mode="rb") if self.compressed else self.raw  # type: ignore[assignment]
            )
        except BaseException:
            self.raw.close()
            raise

    def size(self) -> int:
        """Bytes on disk now (compressed size for gzip): a follower compares it with its offset."""
        return os.fstat(self.raw.fileno()).st_size

    def close(self) -> None:
        try:
            if self.compressed:
                self.stream.close()
        finally:
            self.raw.close()


class LineReader:
    """Lines of a stream with their offsets and numbers, at most `limit` + 2 bytes read at a time.

    `final=False` (following a growing file): a last line without its newline is not handed over; the reader
    steps back to its start and returns None, to read it whole once its newline arrived.
    """

    def __init__(self, stream: BinaryIO, limit: int, offset: int = 0, line: int = 1) -> None:
        self.stream = stream
        self.limit = limit
        self.offset = offset
        self.line = line
        # Inside an over-long line already handed over whose newline has not arrived yet (following).
        self._discarding = False
        if offset:
            stream.seek(offset)

    def rewind(self, offset: int, line: int) -> None:
        self.stream.seek(offset)
        self.offset, self.line, self._discarding = offset, line, False

    def read(self, final: bool) -> RawInput | None:
        start = self.offset
        raw = self.stream.readline(self.limit + 2)
        # The common case first, in as few steps as possible: a whole line after the first one.
        if start and raw.endswith(b"\n") and not self._discarding:
            line = raw.rstrip(b"\r\n")
            self.offset = end = start + len(raw)
            number = self.line
            self.line = number + 1
            # A newline within limit + 2 bytes: at most limit + 1 bytes before it, nothing to cut off.
            return _new_raw(RawInput, (start, end, number, line, len(line) > self.limit))
        return self._read(raw, final)

    def _read(self, raw: bytes, final: bool) -> RawInput | None:
        chunk = self.limit + 2
        while True:
            start = self.offset
            if not raw:
                return None
            ended = raw.endswith(b"\n")
            if self._discarding:
                self.offset += len(raw)
                self._discarding = not ended
                raw = self.stream.readline(chunk)
                continue
            if not ended and len(raw) < chunk and not final:
                self.stream.seek(start)  # a partial last line: wait for the rest
                return None
            self.offset += len(raw)
            line = raw.rstrip(b"\r\n") if ended else raw
            if start == 0 and line.startswith(UTF8_BOM):  # editors on Windows start UTF-8 files with one
                line = line[len(UTF8_BOM) :]
            too_long = len(line) > self.limit
            if too_long and not ended:
                # Keep the first bytes for the dead letter; skip the rest of the over-long line.
                while rest := self.stream.readline(chunk):
                    self.offset += len(rest)
                    if rest.endswith(b"\n"):
                        break
                else:
                    self._discarding = not final
            number = self.line
            self.line += 1
            return RawInput(start, self.offset, number, line[: self.limit + 1] if too_long else line, too_long)


def read_csv_record(reader: LineReader, final: bool) -> RawInput | None:
    """One CSV record: a line, joined with the next ones while its `"` count is odd (RFC 4180 quoting lets
    a quoted field hold newlines). Bounded by the reader's limit: a longer record is handed over as too long."""
    first = reader.read(final)
    if first is None or first.too_long or first.data.count(_QUOTE) % 2 == 0:
        return first
    parts = [first.data]
    size = len(first.data)
    quotes = first.data.count(_QUOTE)
    while quotes % 2:
        more = reader.read(final)
        if more is None:
            if not final:
                reader.rewind(first.offset, first.line)
                return None
            break  # an unterminated quote at the end of the file: the parser rejects it
        if more.too_long or size + 1 + len(more.data) > reader.limit:
            joined = b"\n".join([*parts, more.data])
            return RawInput(first.offset, more.end, first.line, joined[: reader.limit + 1], True)
        parts.append(more.data)
        size += 1 + len(more.data)
        quotes += more.data.count(_QUOTE)
    return RawInput(first.offset, reader.offset, first.line, b"\n".join(parts), False)


def line_number_at(stream: BinaryIO, offset: int) -> int:
    """The number of the line starting at `offset` (1 + the newlines before it); leaves the stream at `offset`."""
    stream.seek(0)
    newlines = 0
    left = offset
    while left > 0:
        chunk = stream.read(min(left, _COUNT_CHUNK_BYTES))
        if not chunk:
            break
        newlines += chunk.count(b"\n")
        left -= len(chunk)
    stream.seek(offset)
    return newlines + 1


class Cursor:
    """One open file being read: its stream, line reader and (CSV) header."""

    def __init__(self, opened: OpenFile, reader: LineReader, csv: CsvDecoder | None, progress: Progress) -> None:
        self.opened = opened
        self.name = str(opened.path)
        self.progress = progress
        self.reader = reader
        self.csv = csv
        self.broken = False  # its gzip stream is damaged: nothing more to read

    @property
    def path(self) -> Path:
        return self.opened.path

    def restart(self) -> None:
        """The file was truncated in place: read it again from its start."""
        self.reader.rewind(0, 1)
        if self.csv is not None:
            self.csv.reset()

    def close(self) -> None:
        self.opened.close()
