"""The file source: replays JSON lines in order, rejects bad lines with file:line and a reason, goes on."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sources.file import FileSource, FileSourceConfig
from tests.fakes import RecordingContext


def tweet(n: int) -> bytes:
    return json.dumps({"data": {"id": str(n), "text": f"tweet {n} مرحبا 🚀", "author_id": "7"}}, ensure_ascii=False).encode()


def source(**config: Any) -> FileSource:
    return FileSource(FileSourceConfig(**config))


def test_replays_every_line_in_order(tmp_path: Path) -> None:
    """Each valid line is emitted once, byte for byte, with its parsed event and path:line origin."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\n".join(tweet(i) for i in range(5)) + b"\n")
    ctx = RecordingContext()
    source(paths=[str(path)]).run(ctx)
    assert [d for d, _, _ in ctx.emitted] == [tweet(i) for i in range(5)]
    assert ctx.emitted[2][1]["data"]["id"] == "2"
    assert ctx.emitted[4][2] == f"{path}:5"


def test_bad_lines_are_rejected_with_reason_and_line(tmp_path: Path) -> None:
    """Bad JSON, bad UTF-8, blank and over-long lines are rejected with their line; good ones still flow."""
    path = tmp_path / "mixed.jsonl"
    lines = [tweet(1), b"{not json", b"\xff\xfe bad utf-8", b"", b"   ", b'{"x": "' + b"a" * 300 + b'"}', tweet(2)]
    path.write_bytes(b"\n".join(lines))  # no trailing newline on the last line
    ctx = RecordingContext()
    source(paths=[str(path)], max_line_bytes=200).run(ctx)
    assert [d for d, _, _ in ctx.emitted] == [tweet(1), tweet(2)]
    reasons = [(origin, reason) for _, origin, reason, _ in ctx.rejected]
    assert reasons == [
        (f"{path}:2", "invalid_json"),
        (f"{path}:3", "invalid_utf8"),
        (f"{path}:4", "empty_line"),
        (f"{path}:5", "empty_line"),
        (f"{path}:6", "line_too_long"),
    ]
    assert ctx.rejected[1][0] == b"\xff\xfe bad utf-8"


def test_glob_expands_sorted_and_loop_repeats(tmp_path: Path) -> None:
    """Globs expand in sorted order; with loop the files are replayed again until stopped."""
    (tmp_path / "b.jsonl").write_bytes(tweet(2) + b"\n")
    (tmp_path / "a.jsonl").write_bytes(tweet(1) + b"\n")
    ctx = RecordingContext(stop_after_emits=5)
    source(paths=[str(tmp_path / "*.jsonl")], loop=True).run(ctx)
    assert [e["data"]["id"] for _, e, _ in ctx.emitted] == ["1", "2", "1", "2", "1"]


def test_missing_file_raises_for_the_supervisor(tmp_path: Path) -> None:
    """A path that matches nothing is a crash (the supervisor restarts the source with backoff)."""
    with pytest.raises(FileNotFoundError, match="no file matches"):
        source(paths=[str(tmp_path / "none-*.jsonl")]).run(RecordingContext())


def test_restart_after_crash_resumes_without_duplicates(tmp_path: Path) -> None:
    """A source restarted after a crash continues after the last record it handed over."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\n".join(tweet(i) for i in range(6)) + b"\n{bad\n")
    ctx = RecordingContext(crash_after_emits=3)
    src = source(paths=[str(path)])
    with pytest.raises(OSError):
        src.run(ctx)
    src.run(ctx)
    assert [e["data"]["id"] for _, e, _ in ctx.emitted] == [str(i) for i in range(6)]
    assert len(ctx.rejected) == 1


def test_stop_is_honoured_promptly_under_rate_limit(tmp_path: Path) -> None:
    """A rate-limited replay returns as soon as the daemon is stopping instead of finishing the file."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\n".join(tweet(i) for i in range(100)) + b"\n")
    ctx = RecordingContext()
    timer = threading.Timer(0.3, ctx.stop.set)
    timer.start()
    source(paths=[str(path)], rate=20).run(ctx)
    assert 2 <= len(ctx.emitted) < 20


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    """The file source's config refuses unknown keys, empty path lists and negative rates."""
    for bad in ({"paths": ["x"], "speed": 3}, {"paths": []}, {"paths": ["x"], "rate": -1}, {"paths": [" "]}):
        with pytest.raises(ValidationError):
            FileSourceConfig(**bad)
