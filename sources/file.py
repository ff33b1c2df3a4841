"""Source `file`: replays JSON-lines files (paths or globs), optionally rate-limited and looping.

Each line must be one JSON value in UTF-8; a UTF-8 byte-order mark at the start of a file is dropped. A line
that is not (bad UTF-8, bad JSON, empty, longer than `max_line_bytes`, ... see sources/parsing.py for every
reason) is rejected with its file and line number and the replay goes on.
"""

from __future__ import annotations

import glob
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import Field, field_validator

from sources.base import SkippedInput, Source, SourceConfig, SourceContext, register_source
from sources.pacing import RateLimiter as _RateLimiter
from sources.parsing import Rejection, parse_json_record, strip_bom

# Far above any real tweet (X v2 lines with expansions are a few KiB) and Kinesis's 1 MiB default record
# limit, yet bounded so one corrupt file without newlines cannot exhaust memory.
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
MAX_LINE_BYTES_LIMIT = 10 * 1024 * 1024
# When looping over files that all turned out empty or missing, pause before trying again.
_EMPTY_LOOP_PAUSE_S = 1.0


class FileSourceConfig(SourceConfig):
    """Replay JSON-lines files."""

    type: Literal["file"] = "file"
    paths: list[str] = Field(min_length=1, description="Files or glob patterns, read in the order given.")
    rate: float = Field(default=0, ge=0, description="Records per second at most; 0 = as fast as possible.")
    loop: bool = Field(default=False, description="Start over from the first file after the last one.")
    max_line_bytes: int = Field(
        default=DEFAULT_MAX_LINE_BYTES, gt=0, le=MAX_LINE_BYTES_LIMIT, description="Longer lines are rejected."
    )

    @field_validator("paths")
    @classmethod
    def _no_blank_paths(cls, value: list[str]) -> list[str]:
        if any(not p.strip() for p in value):
            raise ValueError("paths must not be empty strings")
        return value


@register_source
class FileSource(Source):
    config_model = FileSourceConfig
    config: FileSourceConfig

    def __init__(self, config: FileSourceConfig) -> None:
        super().__init__(config)
        # Lines already handed over in the current pass, per file: a restart after a crash resumes after
        # them instead of sending them twice. (Kept in memory only; durable checkpoints are the spool's job.)
        self._position: dict[Path, int] = {}
        # The file being read, for `position()`: None between passes, where no line is the next input.
        self._reading: Path | None = None

    def run(self, ctx: SourceContext) -> None:
        limiter = _RateLimiter(self.config.rate)
        while not ctx.stopping:
            emitted_any = False
            for path in self._expand():
                self._reading = path
                for line_number, data, event, origin in self._records(path, ctx):
                    if not limiter.wait(ctx) or not ctx.emit(data, event, origin):
                        return
                    self._position[path] = line_number
                    emitted_any = True
            self._reading = None
            if not self.config.loop:
                return
            self._position.clear()
            if not emitted_any and ctx.wait(_EMPTY_LOOP_PAUSE_S):
                return

    def position(self) -> tuple[str, int] | None:
        """(file, line number) of the next line `run` would read; None outside a file."""
        path = self._reading
        if path is None:
            return None
        return str(path), self._position.get(path, 0) + 1

    def skip(self, position: Hashable) -> SkippedInput | None:
        """Read line `position` of its file raw (as `_records` splits lines) and resume after it."""
        if not isinstance(position, tuple) or len(position) != 2:
            return None
        name, wanted = position
        if not isinstance(name, str) or not isinstance(wanted, int):
            return None
        path = Path(name)
        try:
            with path.open("rb") as handle:
                for line_number, (line, _too_long) in enumerate(_lines(handle, self.config.max_line_bytes), 1):
                    if line_number == wanted:
                        self._position[path] = wanted
                        return SkippedInput(line, f"{path}:{wanted}")
        except OSError:
            return None
        return None

    def _expand(self) -> Iterator[Path]:
        for pattern in self.config.paths:
            matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
            if not matches:
                raise FileNotFoundError(f"no file matches {pattern!r}")
            for match in matches:
                yield Path(match)

    def _records(self, path: Path, ctx: SourceContext) -> Iterator[tuple[int, bytes, object, str]]:
        limit = self.config.max_line_bytes
        resume_after = self._position.get(path, 0)
        with path.open("rb") as handle:
            for line_number, (line, too_long) in enumerate(_lines(handle, limit), 1):
                if line_number <= resume_after:
                    continue
                origin = f"{path}:{line_number}"
                if line_number == 1:  # editors on Windows start UTF-8 files with a byte-order mark
                    line = strip_bom(line)
                parsed = parse_json_record(line, limit, truncated=too_long)
                if isinstance(parsed, Rejection):
                    ctx.reject(line, origin, parsed.reason, parsed.detail)
                    self._position[path] = line_number
                    continue
                yield line_number, line, parsed, origin


def _lines(handle: BinaryIO, limit: int) -> Iterator[tuple[bytes, bool]]:
    """Each line without its ending (of an over-long line only its first bytes), and whether it exceeds `limit`.

    Reads at most `limit` + 2 bytes at a time, so a line of exactly `limit` bytes fits with an LF or a CRLF
    ending, and an endless line costs bounded memory.
    """
    while raw := handle.readline(limit + 2):
        ended = raw.endswith(b"\n")
        line = raw.rstrip(b"\r\n") if ended else raw
        too_long = len(line) > limit
        if too_long and not ended:
            # Keep the first bytes for the dead letter; skip the rest of the over-long line.
            while (rest := handle.readline(limit + 2)) and not rest.endswith(b"\n"):
                pass
        yield (line[: limit + 1] if too_long else line), too_long
