"""Source `file`: replays files of JSON lines, CSV or plain text (paths, globs, directories; gzip too),
optionally rate-limited, paced by a timestamp field, looping, or following growing files like `tail -F`.

Every input that cannot become a record (bad UTF-8, bad JSON, a CSV row that does not fit its header, an
over-long line, a damaged gzip stream, ... see sources/file_formats.py and sources/parsing.py) is rejected
with its file and line number and the replay goes on. A UTF-8 byte-order mark at the start of a file is
dropped. Positions are byte offsets per file identity (device, inode): `position()` names the next input,
`positions()` every file's progress, `skip` seeks past one input. With `checkpoint` (the default) every
emitted or rejected input carries a token naming the file and where the next input starts; the saved state
and how a restart resumes from it are in sources/file_checkpoint.py.
"""

from __future__ import annotations

import glob
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sources import file_formats
from sources.base import SkippedInput, Source, SourceConfig, SourceContext, register_source
from sources.file_checkpoint import Checkpoint, FilePosition, Progress, key_of
from sources.file_formats import CsvDecoder, Decoded, decode_jsonl, decode_text
from sources.file_pace import Pacer
from sources.file_read import GZIP_ERRORS, Cursor, Identity, LineReader, OpenFile, RawInput, line_number_at, read_csv_record
from sources.pacing import RateLimiter, auto_burst
from sources.parsing import Rejection, safe_detail

# Far above any real tweet (X v2 lines with expansions are a few KiB) and Kinesis's 1 MiB default record
# limit, yet bounded so one corrupt file without newlines cannot exhaust memory.
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
MAX_LINE_BYTES_LIMIT = 10 * 1024 * 1024
# When looping over files that all turned out empty or missing, pause before trying again.
_EMPTY_LOOP_PAUSE_S = 1.0
# Following: how often files are checked for new lines, rotation, truncation and new matches. Short
# enough to feel live, long enough that idle polling costs nothing measurable.
DEFAULT_POLL_INTERVAL_S = 0.25
MIN_POLL_INTERVAL_S = 0.01
MAX_POLL_INTERVAL_S = 10.0
REASON_GZIP_TRUNCATED = "gzip_truncated"
REASON_GZIP_CORRUPT = "gzip_corrupt"
# protocol_message kinds (counted by kind): not records, but worth seeing.
KIND_UNPACED = "unpaced_record"


class PaceConfig(BaseModel):
    """Replay at the original pace, read from a timestamp field of each record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str | None = Field(
        default=None, description="Dotted path of the timestamp (e.g. data.created_at); unset = no pacing."
    )
    speed: float = Field(default=1.0, gt=0, description="Speed factor: 10 = ten times faster than the original.")


class FileSourceConfig(SourceConfig):
    """Replay (or follow) JSON-lines, CSV or text files."""

    type: Literal["file"] = "file"
    paths: list[str] = Field(
        min_length=1, description="Files, glob patterns or directories (their visible files, sorted), in order."
    )
    format: Literal["jsonl", "csv", "text"] = Field(default="jsonl", description="How each file is read.")
    csv_delimiter: str = Field(default=",", description="CSV field separator (one character).")
    csv_infer_numbers: bool = Field(default=False, description="CSV fields that are JSON numbers become numbers.")
    text_field: str = Field(default="text", description="Key of the line in records of format text.")
    rate: float = Field(default=0, ge=0, description="Records per second at most; 0 = as fast as possible.")
    pace: PaceConfig = Field(default_factory=PaceConfig, description="Replay at the pace of a timestamp field.")
    loop: bool = Field(default=False, description="Start over from the first file after the last one.")
    follow: bool = Field(default=False, description="Keep reading files as they grow, like tail -F.")
    poll_interval: float = Field(
        default=DEFAULT_POLL_INTERVAL_S,
        ge=MIN_POLL_INTERVAL_S,
        le=MAX_POLL_INTERVAL_S,
        description="Following: seconds between checks for new lines, rotated files and new matches.",
    )
    max_line_bytes: int = Field(
        default=DEFAULT_MAX_LINE_BYTES, gt=0, le=MAX_LINE_BYTES_LIMIT, description="Longer lines are rejected."
    )
    checkpoint: bool = Field(
        default=True, description="Save how far each file was delivered; a restart resumes there (state.directory)."
    )

    @field_validator("paths")
    @classmethod
    def _no_blank_paths(cls, value: list[str]) -> list[str]:
        if any(not p.strip() for p in value):
            raise ValueError("paths must not be empty strings")
        return value

    @field_validator("csv_delimiter")
    @classmethod
    def _one_delimiter(cls, value: str) -> str:
        if len(value) != 1 or value in "\"\r\n":
            raise ValueError("csv_delimiter must be one character other than a quote or a line break")
        return value

    @field_validator("text_field")
    @classmethod
    def _free_text_field(cls, value: str) -> str:
        if not value or value in ("file", "line"):
            raise ValueError("text_field must be a non-empty key other than file and line (those are set too)")
        return value

    @model_validator(mode="after")
    def _follow_or_loop(self) -> FileSourceConfig:
        if self.follow and self.loop:
            raise ValueError("follow and loop exclude each other (a followed file never ends)")
        return self


@register_source
class FileSource(Source):
    config_model = FileSourceConfig
    config: FileSourceConfig

    def __init__(self, config: FileSourceConfig) -> None:
        super().__init__(config)
        # Progress per file identity: a restart after a crash resumes after what was handed over instead of
        # sending it twice. (In memory; persisting `positions()` is the checkpoint's job.)
        self._progress: dict[Identity, Progress] = {}
        self._broken: set[Identity] = set()  # damaged gzip files already reported in this pass
        # The file being read, for `position()`: None between passes, where no input is the next one.
        self._reading: Identity | None = None
        self._checkpoint = Checkpoint()
        self._tokens = config.checkpoint
        self._pass = 0  # loops over the files so far (with a checkpoint, counted on from the saved one)
        self.emitted = 0
        self.unpaced = 0  # records sent at once under `pace` because they had no readable timestamp

    def run(self, ctx: SourceContext) -> None:
        limiter = RateLimiter(self.config.rate, auto_burst(self.config.rate))
        pacer = Pacer(self.config.pace.field, self.config.pace.speed) if self.config.pace.field else None
        if self.config.follow:
            from sources.file_follow import follow

            follow(self, ctx, limiter, pacer)
            return
        while not ctx.stopping:
            emitted_before = self.emitted
            for path in self.expand():
                cursor = self.open(path, ctx)
                try:
                    if self.drain(cursor, ctx, True, limiter, pacer) is None:
                        return
                finally:
                    cursor.close()
            self._reading = None
            if not self.config.loop:
                return
            self._pass += 1
            self._progress.clear()
            self._broken.clear()
            if pacer is not None:
                pacer.restart()
            if self.emitted == emitted_before and ctx.wait(_EMPTY_LOOP_PAUSE_S):
                return

    def position(self) -> tuple[str, int, int, int] | None:
        """(file, device, inode, byte offset) of the next input `run` would read; None outside a file."""
        known = self._progress.get(self._reading) if self._reading is not None else None
        if known is None:
            return None
        return known.path, known.device, known.inode, known.at[0]

    def checkpoints(self) -> bool:
        return self._tokens

    def resume(self, state: Mapping[str, Any]) -> None:
        """Restore a saved state (format in sources/file_checkpoint.py): files resume as `open` says."""
        self._checkpoint.resume(state)
        self._pass = self._checkpoint.pass_

    def checkpoint_state(self, committed: Mapping[Hashable, Any]) -> dict[str, Any]:
        return self._checkpoint.state(committed)

    def positions(self) -> dict[Identity, FilePosition]:
        """Every file read in this pass (or followed), by (device, inode): how far it was handed over."""
        return {key: progress.snapshot() for key, progress in self._progress.items()}

    def skip(self, position: Hashable) -> SkippedInput | None:
        """Read the input at `position` raw (as `run` splits inputs) and resume after it."""
        if not isinstance(position, tuple) or len(position) != 4:
            return None
        name, device, inode, offset = position
        if not isinstance(name, str) or not all(isinstance(n, int) for n in (device, inode, offset)):
            return None
        try:
            opened = OpenFile(Path(name))
            try:
                if opened.identity != (device, inode):
                    return None  # another file is at that path now
                known = self._progress.get(opened.identity)
                line = known.at[1] if known is not None and known.at[0] == offset else line_number_at(opened.stream, offset)
                reader = LineReader(opened.stream, self.config.max_line_bytes, offset, line)
                raw = self._next_raw(reader, self.config.format == "csv", final=True)
            finally:
                opened.close()
        except OSError:
            return None
        except GZIP_ERRORS:
            return None
        if raw is None:
            return None
        info = self._checkpoint.files.get(key_of((device, inode)))
        generation = known.at[3] if known is not None else info.generation if info is not None else 0
        at = (raw.end, reader.line, self._pass, generation)
        progress = self._progress[(device, inode)] = Progress(name, (device, inode), at)
        token = (progress.key, progress.at) if self._tokens else None
        return SkippedInput(raw.data, f"{name}:{raw.line}", token)

    def expand(self, follow: bool = False) -> list[Path]:
        """The files to read, in order, each once; following, a pattern may match nothing yet."""
        found: dict[Path, None] = {}
        for pattern in self.config.paths:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            files: list[Path] = []
            for match in map(Path, matches):
                if match.is_dir():  # its visible files, not recursive: a directory of inputs, not a tree
                    try:
                        files += sorted(p for p in match.iterdir() if not p.name.startswith(".") and p.is_file())
                    except FileNotFoundError:
                        if not follow:
                            raise
                        # Following, a directory removed since the glob is like one that was never there.
                else:
                    files.append(match)
            if not files and not follow:
                raise FileNotFoundError(f"no file matches {pattern!r}")
            found.update(dict.fromkeys(files))
        return list(found)

    def open(self, path: Path, ctx: SourceContext | None = None) -> Cursor:
        """Opens `path`, resuming where its identity's progress in this run says, else its checkpoint."""
        opened = OpenFile(path)
        try:
            limit = self.config.max_line_bytes
            known = self._progress.get(opened.identity)
            generation = 0
            if known is not None:
                offset, line, _, generation = known.at
            elif self._tokens:
                key = key_of(opened.identity)
                offset, line, broken, note = self._checkpoint.start(opened, key, self._pass)
                generation = self._checkpoint.generation(key)
                if broken:
                    self._broken.add(opened.identity)
                if note is not None and ctx is not None:
                    ctx.protocol_message(*note)
            else:
                offset, line = 0, 1
            csv = None
            if self.config.format == "csv":
                csv = CsvDecoder(self.config.csv_delimiter, self.config.csv_infer_numbers, limit)
                if offset:  # resuming after the header: read it again (it was reported the first time)
                    opened.stream.seek(0)
                    header = read_csv_record(LineReader(opened.stream, limit), final=True)
                    if header is not None:
                        csv.take_header(header)
            reader = LineReader(opened.stream, limit, offset, line)
        except BaseException:
            opened.close()
            raise
        progress = Progress(str(path), opened.identity, (offset, line, self._pass, generation))
        self._progress[opened.identity] = progress
        return Cursor(opened, reader, csv, progress)

    def keep_progress(self, identities: set[Identity]) -> None:
        """Following: forget the progress of files no followed path shows any more (rotated away, deleted)."""
        gone = [key for key in self._progress if key not in identities]
        for key in gone:
            del self._progress[key]
            if self._reading == key:
                self._reading = None
        if self._tokens:
            self._checkpoint.forget({key_of(key) for key in gone})
            self._checkpoint.keep_resumed({key_of(key) for key in identities})

    def restart_progress(self, cursor: Cursor) -> None:
        """A followed file was truncated in place: its progress (and what its checkpoint said) starts over."""
        generation = cursor.progress.at[3]
        if self._tokens:
            self._checkpoint.renewed(cursor.progress.key, cursor.opened)
            generation = self._checkpoint.generation(cursor.progress.key)
        cursor.progress.at = (0, 1, self._pass, generation)
        self._progress[cursor.opened.identity] = cursor.progress

    def widen_fingerprint(self, cursor: Cursor) -> None:
        """Following: fingerprint more of a file opened while short (see Checkpoint.widen)."""
        if self._tokens:
            self._checkpoint.widen(cursor.progress.key, cursor.opened, cursor.reader.offset)

    def drain(self, cursor: Cursor, ctx: SourceContext, final: bool, limiter: RateLimiter, pacer: Pacer | None) -> int | None:
        """Hands over every input `cursor` has now; their count, or None when the daemon is stopping."""
        key = cursor.opened.identity
        if cursor.broken or key in self._broken:
            return 0
        self._reading = key
        if cursor.csv is None and self.config.format == "jsonl" and pacer is None and not limiter.interval:
            return self._drain_jsonl(cursor, ctx, final or cursor.opened.compressed)
        count = 0
        while True:
            try:
                raw = self._next_raw(cursor.reader, cursor.csv is not None, final or cursor.opened.compressed)
            except GZIP_ERRORS as exc:
                self._report_gzip(cursor, ctx, exc)
                return count
            if raw is None:
                return count
            if not self._hand_over(cursor, raw, ctx, limiter, pacer):
                return None
            count += 1

    def _drain_jsonl(self, cursor: Cursor, ctx: SourceContext, final: bool) -> int | None:
        """`drain` for JSON lines at full speed (no rate, no pacing): the hot path, in one loop.

        The same steps as `_hand_over` for each line, without its per-line dispatch. No stop check before
        `emit` (the limiter's, with no rate): `emit` itself refuses a record once the daemon is stopping.
        """
        read, emit, progress, name = cursor.reader.read, ctx.emit, cursor.progress, cursor.name
        limit = self.config.max_line_bytes
        key, pass_, generation, tokens = progress.key, self._pass, progress.at[3], self._tokens
        # decode_jsonl's call without its (data, event) tuple; looked up per drain, not bound at import, so a
        # replaced parser (tests do that) applies here as it does there.
        parse = file_formats.parse_json_record
        count = 0
        while True:
            try:
                raw = read(final)
            except GZIP_ERRORS as exc:
                self._report_gzip(cursor, ctx, exc)
                return count
            if raw is None:
                return count
            event = parse(raw.data, limit, truncated=raw.too_long)
            at = (raw.end, raw.line + 1, pass_, generation)  # one line per input: the reader's next line number
            if isinstance(event, Rejection):
                ctx.reject(raw.data, f"{name}:{raw.line}", event.reason, event.detail, (key, at) if tokens else None)
            elif emit(raw.data, event, f"{name}:{raw.line}", (key, at) if tokens else None):
                self.emitted += 1
            else:
                return None
            progress.at = at
            count += 1

    def _next_raw(self, reader: LineReader, csv: bool, final: bool) -> RawInput | None:
        return read_csv_record(reader, final) if csv else reader.read(final)

    def _hand_over(self, cursor: Cursor, raw: RawInput, ctx: SourceContext, limiter: RateLimiter, pacer: Pacer | None) -> bool:
        origin = f"{cursor.name}:{raw.line}"
        progress = cursor.progress
        at = (raw.end, cursor.reader.line, self._pass, progress.at[3])
        token = (progress.key, at) if self._tokens else None
        decoded: Decoded | None
        if cursor.csv is not None and not cursor.csv.has_header:
            decoded = cursor.csv.take_header(raw)
        else:
            decoded = self._decode(cursor, raw)
        if isinstance(decoded, Rejection):
            ctx.reject(raw.data, origin, decoded.reason, decoded.detail, token)
        elif decoded is not None:
            data, event = decoded
            if pacer is not None:
                delay = pacer.delay(event)
                if delay is None:
                    self.unpaced += 1
                    ctx.protocol_message(KIND_UNPACED, f"{origin}: no readable timestamp at {self.config.pace.field}")
                elif delay > 0 and ctx.wait(delay):
                    return False
            if not limiter.wait(ctx) or not ctx.emit(data, event, origin, token):
                return False
            self.emitted += 1
        progress.at = at
        return True

    def _decode(self, cursor: Cursor, raw: RawInput) -> Decoded:
        limit = self.config.max_line_bytes
        if cursor.csv is not None:
            return cursor.csv.decode(raw)
        if self.config.format == "text":
            return decode_text(raw, limit, self.config.text_field, cursor.name)
        return decode_jsonl(raw, limit)

    def _report_gzip(self, cursor: Cursor, ctx: SourceContext, exc: BaseException) -> None:
        """A damaged gzip file: reported once (dead letter naming the file), the lines before it were sent."""
        cursor.broken = True
        self._broken.add(cursor.opened.identity)
        reason = REASON_GZIP_TRUNCATED if isinstance(exc, EOFError) else REASON_GZIP_CORRUPT
        detail = safe_detail(f"{cursor.path}: after byte {cursor.reader.offset} of its content: {type(exc).__name__}: {exc}")
        # Its token says the file is done: a restart does not read it again only to report the damage twice.
        token = (cursor.progress.key, (*cursor.progress.at, True)) if self._tokens else None
        ctx.reject(b"", f"{cursor.path}:{cursor.reader.line}", reason, detail, token)
