"""The file source's JSON-lines hot loop (`_drain_jsonl`) hands over exactly what the general loop does."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sources.file import FileSource, FileSourceConfig
from sources.file_read import looks_like_gzip
from sources.parsing import UTF8_BOM
from tests.fakes import RecordingContext
from tests.sources.test_file import tweet

MAX_LINE_BYTES = 64
# A rate the limiter never waits for, but which takes the general loop (`_hand_over` per input).
GENERAL_LOOP_RATE = 1e9

LINE = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"[1]", b'{"a": "\\ud800"}', b"NaN", UTF8_BOM + b"{}", b"\r", b"", b"1" * 30, b"[" * 40 + b"]" * 40]),
    st.builds(lambda n: b'{"n": %d}' % n, st.integers(-(10**25), 10**25)),
    st.builds(lambda n: b'{"x": "' + b"y" * n + b'"}', st.integers(50, 150)),  # around the line limit
)
ENDING = st.sampled_from([b"\n", b"\r\n", b"\r\r\n"])


def run(path: Path, mode: str, after: int, **config: Any) -> tuple[Any, ...]:
    """What one replay handed over and where the source stands afterwards."""
    kwargs: dict[str, Any] = {"stop": {"stop_after_emits": after}, "crash": {"crash_after_emits": after}}.get(mode, {})
    ctx = RecordingContext(**kwargs)
    source = FileSource(FileSourceConfig(paths=[str(path)], max_line_bytes=MAX_LINE_BYTES, **config))
    crashed = False
    try:
        source.run(ctx)
    except OSError:
        crashed = True
    return ctx.emitted, ctx.rejected, source.positions(), source.position(), source.emitted, crashed


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.tuples(LINE, ENDING), max_size=10),
    last_ending=st.booleans(),
    bom=st.booleans(),
    compress=st.sampled_from(["no", "gzip", "gzip-cut"]),
    mode=st.sampled_from(["all", "stop", "crash"]),
    after=st.integers(0, 4),
)
def test_the_hot_loop_hands_over_what_the_general_loop_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: list[tuple[bytes, bytes]], last_ending: bool, bom: bool,
    compress: str, mode: str, after: int,
) -> None:  # fmt: skip
    """Any file (CRLF, BOM, over-long lines, no final newline, gzip, cut gzip), stopped or crashing: the same
    records, rejections, origins, positions and counts from the hot loop as from the general one."""
    body = b"".join(line.replace(b"\n", b" ") + ending for line, ending in lines)
    if lines and not last_ending:
        body = body.rstrip(b"\r\n")
    body = (UTF8_BOM if bom else b"") + body
    if compress == "no":
        data = body
    else:
        data = gzip.compress(body, mtime=0)
        data = data[: len(data) // 2] if compress == "gzip-cut" else data
    if compress == "no" and looks_like_gzip(data[:4]):
        return  # by rule read as gzip: not this property's subject
    path = tmp_path / "f.jsonl"
    path.write_bytes(data)
    calls: list[int] = []
    hot_loop = FileSource._drain_jsonl

    def counting(self: FileSource, *args: Any) -> int | None:
        calls.append(1)
        return hot_loop(self, *args)

    monkeypatch.setattr(FileSource, "_drain_jsonl", counting)
    hot = run(path, mode, after)
    took_hot_loop = bool(calls)
    general = run(path, mode, after, rate=GENERAL_LOOP_RATE)
    assert took_hot_loop and len(calls) == 1  # the comparison is between the two loops
    assert hot == general


def test_the_hot_loop_stops_at_a_refused_emit_without_counting_it(tmp_path: Path) -> None:
    """An emit refused (the daemon stopping) ends the replay there: progress names that line, not the next."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join(tweet(n) + b"\n" for n in range(5)))
    ctx = RecordingContext(stop_after_emits=2)
    source = FileSource(FileSourceConfig(paths=[str(path)]))
    source.run(ctx)
    assert [d for d, _, _ in ctx.emitted] == [tweet(0), tweet(1)]
    stat = path.stat()
    offset = len(tweet(0)) + len(tweet(1)) + 2
    assert source.positions()[(stat.st_dev, stat.st_ino)][3:] == (offset, 3)
    assert source.emitted == 2
