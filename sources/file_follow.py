"""Follow mode of the file source: `tail -F` over paths, globs and directories.

Each poll reads every complete new line of every followed file (a last line without its newline waits for
it), then compares the file at the path with the one open, by identity (device, inode) and size, never by
name:

- another identity at the path (rotation by rename, or delete and recreate): the old file is drained to its
  end, its last line included, then the new one is read from its start;
- nothing at the path (deleted, or renamed with no successor yet): the open file is still read and the path
  waited for;
- the same file, now shorter than what was read (truncated in place, copytruncate): read again from its start.

Patterns are expanded again at each poll, so new files matching a glob or appearing in a directory are
followed from their start. Compressed files are read once, to their end (a gzip file is complete when it
appears). Every wait is `ctx.wait(poll_interval)`, so a stop is noticed within one interval.

Across restarts (with `checkpoint`): each file found at a followed path is looked up by identity in the
saved state, whatever its name now, so a file rotated while the daemon was down resumes where it was
delivered to, as long as a followed path shows it (follow `app.log*`, not only `app.log`, to keep the tail
of a file renamed while stopped); the new file at the old name is read from its start. Entries of files no
followed path shows any more (after the first look at the paths, and whenever one disappears while
running) are dropped from the state: nothing could read them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sources.base import SourceContext
from sources.file_checkpoint import KIND_TRUNCATED
from sources.file_pace import Pacer
from sources.file_read import Cursor, Identity, identity

if TYPE_CHECKING:
    from sources.file import FileSource
    from sources.pacing import RateLimiter

KIND_ROTATED = "file_rotated"
__all__ = ["KIND_ROTATED", "KIND_TRUNCATED", "follow"]


class _Tail:
    """One followed path and the file open for it (None while the path has no file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cursor: Cursor | None = None
        self.present: Identity | None = None  # the file at the path at the last poll


def _open_identities(tails: dict[Path, _Tail]) -> set[Identity]:
    return {tail.cursor.opened.identity for tail in tails.values() if tail.cursor is not None}


def follow(source: FileSource, ctx: SourceContext, limiter: RateLimiter, pacer: Pacer | None) -> None:
    tails: dict[Path, _Tail] = {}
    try:
        while not ctx.stopping:
            for path in source.expand(follow=True):
                tails.setdefault(path, _Tail(path))
            busy = False
            for tail in list(tails.values()):
                result = _poll(source, tail, ctx, limiter, pacer, tails)
                if result is None:
                    return
                busy = busy or result
            # A rotated file keeps its progress while some followed path still shows it (renamed into a
            # followed directory it resumes where it was, not from its start); otherwise it is forgotten.
            keep = _open_identities(tails) | {tail.present for tail in tails.values() if tail.present is not None}
            source.keep_progress(keep)
            if not busy and ctx.wait(source.config.poll_interval):
                return
    finally:
        for tail in tails.values():
            if tail.cursor is not None:
                tail.cursor.close()


def _poll(
    source: FileSource, tail: _Tail, ctx: SourceContext, limiter: RateLimiter, pacer: Pacer | None, tails: dict[Path, _Tail]
) -> bool | None:
    """Reads what is new at `tail`; whether anything happened, or None when the daemon is stopping."""
    if tail.cursor is None:
        try:
            tail.present = identity(os.stat(tail.path))
        except FileNotFoundError:
            tail.present = None
            return False  # not there (yet, or again): waited for
        if tail.present in _open_identities(tails):
            return False  # a rotated file another path still reads: it passes here once that one lets go
        try:
            tail.cursor = source.open(tail.path, ctx)
        except (FileNotFoundError, IsADirectoryError):
            return False  # gone again, or a followed directory that did not exist at the last expansion
    cursor = tail.cursor
    count = source.drain(cursor, ctx, False, limiter, pacer)
    if count is None:
        return None
    source.widen_fingerprint(cursor)
    try:
        now = os.stat(tail.path)
    except FileNotFoundError:
        tail.present = None
        return count > 0  # gone from the path: keep what is open, wait for a successor
    tail.present = identity(now)
    if identity(now) != cursor.opened.identity:
        # Rotated: whatever the old file still holds comes first, its unterminated last line too (nobody
        # writes to it any more); then the new file from its start.
        if source.drain(cursor, ctx, True, limiter, pacer) is None:
            return None
        ctx.protocol_message(KIND_ROTATED, f"{tail.path}: a new file took its place")
        cursor.close()
        tail.cursor = None
        return True
    if not cursor.opened.compressed and now.st_size < cursor.reader.offset:
        ctx.protocol_message(KIND_TRUNCATED, f"{tail.path}: shrank to {now.st_size} bytes, read again from its start")
        cursor.restart()
        source.restart_progress(cursor)
        return True
    return count > 0
