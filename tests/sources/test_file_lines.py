"""The file source and poison lines: each defect seen in replays, then a property over whole files."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from daemon.deadletter import DeadLetterFile
from sources.file import FileSource, FileSourceConfig
from sources.file_read import looks_like_gzip
from sources.parsing import UTF8_BOM, Rejection, parse_json_record, strip_bom
from tests.fakes import RecordingContext
from tests.sources.test_file import tweet

DEEP = b'{"data": ' * 5000 + b"1" + b"}" * 5000


def replay(path: Path, lines: list[bytes], **config: object) -> RecordingContext:
    path.write_bytes(b"\n".join(lines) + b"\n")
    ctx = RecordingContext()
    FileSource(FileSourceConfig(paths=[str(path)], **config)).run(ctx)  # type: ignore[arg-type]
    return ctx


def test_deeply_nested_line_is_rejected_and_the_replay_goes_on(tmp_path: Path) -> None:
    """A line nested 5,000 deep made json raise RecursionError out of the source; now it is one rejection."""
    path = tmp_path / "t.jsonl"
    ctx = replay(path, [tweet(1), DEEP, tweet(2)])
    assert [d for d, _, _ in ctx.emitted] == [tweet(1), tweet(2)]
    assert [(origin, reason) for _, origin, reason, _ in ctx.rejected] == [(f"{path}:2", "nesting_too_deep")]


def test_a_bom_at_the_start_of_a_file_is_dropped(tmp_path: Path) -> None:
    """A file saved with a UTF-8 byte-order mark: its first line is a record, shipped without the mark."""
    path = tmp_path / "t.jsonl"
    ctx = replay(path, [UTF8_BOM + tweet(1), tweet(2)])
    assert [(d, o) for d, _, o in ctx.emitted] == [(tweet(1), f"{path}:1"), (tweet(2), f"{path}:2")]
    assert ctx.rejected == []


def test_a_bom_inside_a_file_is_still_invalid(tmp_path: Path) -> None:
    """Only the start of a file may carry a byte-order mark; on a later line it is invalid JSON."""
    path = tmp_path / "t.jsonl"
    ctx = replay(path, [tweet(1), UTF8_BOM + tweet(2)])
    assert [d for d, _, _ in ctx.emitted] == [tweet(1)]
    assert [(r, o) for _, o, r, _ in ctx.rejected] == [("invalid_json", f"{path}:2")]


def test_lone_surrogates_nan_and_huge_numbers_are_rejected(tmp_path: Path) -> None:
    """JSON that parsed but cannot travel (a lone surrogate, NaN, a 5,000-digit id) is rejected, not shipped."""
    path = tmp_path / "t.jsonl"
    lines = [b'{"data": {"id": "1", "text": "bad \\ud800"}}', b'{"data": {"id": NaN}}', b'{"data": {"id": ' + b"7" * 5000 + b"}}"]
    ctx = replay(path, [*lines, tweet(4)])
    assert [d for d, _, _ in ctx.emitted] == [tweet(4)]
    assert [r for _, _, r, _ in ctx.rejected] == ["invalid_unicode", "invalid_json", "number_too_large"]


def test_rejections_are_writable_to_the_dead_letter_file(tmp_path: Path) -> None:
    """Every rejection the parser gives can be written by the daemon's dead-letter file and read back."""
    dead = DeadLetterFile(tmp_path / "dead.jsonl", sink="kinesis")
    payloads = [DEEP, b'"\\ud800"', b"\xff\xfe", b"NaN", UTF8_BOM + b"{}", b"1" * 5000, b"\x00"]
    for number, data in enumerate(payloads, 1):
        result = parse_json_record(data, 1024 * 1024)
        assert isinstance(result, Rejection)
        dead.write(data=data, source="file", origin=f"f:{number}", reason=result.reason, detail=result.detail)
    dead.close()
    entries = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["origin"] for e in entries] == [f"f:{n}" for n in range(1, len(payloads) + 1)]


LINE = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([tweet(1), tweet(2), DEEP, b'"\\ud800"', b"NaN", UTF8_BOM + b"{}", b"[1]", b"\r", b"1e999"]),
    st.builds(lambda n: tweet(n), st.integers(0, 10**6)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINE, max_size=12), st.booleans())
def test_every_line_of_any_file_is_emitted_or_rejected_once(tmp_path: Path, lines: list[bytes], bom: bool) -> None:
    """Any file: each line is emitted byte for byte or rejected with its number, once, and the source returns."""
    lines = [line.replace(b"\n", b" ") for line in lines]
    if bom and not lines:
        lines = [b""]  # a file holding only a byte-order mark has one (empty) line
    path = tmp_path / "f.jsonl"
    body = b"".join(line + b"\n" for line in lines)
    path.write_bytes((UTF8_BOM if bom else b"") + body)
    assume(not looks_like_gzip(path.read_bytes()[:4]))  # by rule a file opening with a gzip header is read as gzip
    ctx = RecordingContext()
    FileSource(FileSourceConfig(paths=[str(path)])).run(ctx)
    seen = {int(o.rsplit(":", 1)[1]): d for d, _, o in ctx.emitted} | {int(o.rsplit(":", 1)[1]): d for d, o, _, _ in ctx.rejected}
    assert len(ctx.emitted) + len(ctx.rejected) == len(seen) == len(lines)
    expected = [line.rstrip(b"\r") for line in lines]  # the exact bytes, minus the line end...
    if expected:
        expected[0] = strip_bom((UTF8_BOM if bom else b"") + expected[0])  # ...and one BOM opening the file
    assert [seen[number] for number in range(1, len(lines) + 1)] == expected
    for data, event, _ in ctx.emitted:
        assert event == json.loads(data)


def test_a_line_of_exactly_max_line_bytes_passes_with_lf_or_crlf(tmp_path: Path) -> None:
    """The limit counts the line's content: with a CRLF ending a line of exactly max_line_bytes is no longer too long."""
    limit = 1024
    fits = b'{"data": {"id": "1", "text": "' + b"x" * (limit - 33) + b'"}}'
    assert len(fits) == limit
    over = fits[:-3] + b'x"}}'
    path = tmp_path / "t.jsonl"
    path.write_bytes(fits + b"\r\n" + fits + b"\n" + over + b"\r\n" + tweet(4) + b"\n")
    ctx = RecordingContext()
    FileSource(FileSourceConfig(paths=[str(path)], max_line_bytes=limit)).run(ctx)
    assert [d for d, _, _ in ctx.emitted] == [fits, fits, tweet(4)]
    assert [(o, r, len(d)) for d, o, r, _ in ctx.rejected] == [(f"{path}:3", "line_too_long", limit + 1)]


def test_a_text_file_opening_with_the_gzip_magic_alone_is_read_as_text(tmp_path: Path) -> None:
    """0x1f 0x8b without a gzip header is a (bad) line, dead-lettered with its bytes, not swallowed as corrupt gzip."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\x1f\x8b\n" + tweet(2) + b"\n")
    ctx = RecordingContext()
    FileSource(FileSourceConfig(paths=[str(path)])).run(ctx)
    assert [d for d, _, _ in ctx.emitted] == [tweet(2)]
    assert [(d, o, r) for d, o, r, _ in ctx.rejected] == [(b"\x1f\x8b", f"{path}:1", "invalid_utf8")]
