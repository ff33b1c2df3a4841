"""The file source's formats and inputs: CSV, text, gzip, directories, globs, pacing and byte-offset positions."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sources.file import FileSource, FileSourceConfig
from sources.file_formats import CsvDecoder
from sources.file_pace import parse_timestamp
from sources.file_read import RawInput
from sources.parsing import Rejection
from tests.fakes import RecordingContext
from tests.sources.test_file import tweet


def replay(**config: Any) -> RecordingContext:
    ctx = RecordingContext()
    FileSource(FileSourceConfig(**config)).run(ctx)
    return ctx


def events(ctx: RecordingContext) -> list[Any]:
    return [event for _, event, _ in ctx.emitted]


def rejections(ctx: RecordingContext) -> list[tuple[str, str]]:
    return [(origin, reason) for _, origin, reason, _ in ctx.rejected]


# --- CSV ---------------------------------------------------------------------------------------------------------


def test_csv_rows_become_objects_keyed_by_the_header_and_dotted_names_nest(tmp_path: Path) -> None:
    """Each CSV row is shipped as the JSON object of its header's keys; `data.id` nests as X v2's data.id."""
    path = tmp_path / "t.csv"
    path.write_bytes(b"data.id,data.text,data.author_id\n1,hello,7\n2,bye,8\n")
    ctx = replay(paths=[str(path)], format="csv")
    assert events(ctx) == [
        {"data": {"id": "1", "text": "hello", "author_id": "7"}},
        {"data": {"id": "2", "text": "bye", "author_id": "8"}},
    ]
    assert [json.loads(data) for data, _, _ in ctx.emitted] == events(ctx)
    assert [origin for _, _, origin in ctx.emitted] == [f"{path}:2", f"{path}:3"]
    assert ctx.rejected == []


def test_csv_quoting_delimiter_and_multiline_fields(tmp_path: Path) -> None:
    """Quoted fields keep delimiters, doubled quotes and newlines; the next row's line number accounts for them."""
    path = tmp_path / "t.csv"
    path.write_bytes(b'id;text\n1;"a;b ""quoted"""\n2;"two\nlines"\n3;plain\n')
    ctx = replay(paths=[str(path)], format="csv", csv_delimiter=";")
    assert events(ctx) == [{"id": "1", "text": 'a;b "quoted"'}, {"id": "2", "text": "two\nlines"}, {"id": "3", "text": "plain"}]
    assert [origin for _, _, origin in ctx.emitted] == [f"{path}:2", f"{path}:3", f"{path}:5"]


def test_csv_bad_rows_are_dead_lettered_with_file_and_line(tmp_path: Path) -> None:
    """A row with too few or too many fields, bad UTF-8, broken quoting or nothing on it is rejected; good rows flow."""
    path = tmp_path / "t.csv"
    path.write_bytes(b'a,b\n1,2\n1\n1,2,3\n\xff,2\n\n"x"y,2\n3,4\n"open,5\n')
    ctx = replay(paths=[str(path)], format="csv")
    assert events(ctx) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
    assert rejections(ctx) == [
        (f"{path}:3", "csv_column_count"),
        (f"{path}:4", "csv_column_count"),
        (f"{path}:5", "invalid_utf8"),
        (f"{path}:6", "empty_line"),
        (f"{path}:7", "csv_invalid"),
        (f"{path}:9", "csv_invalid"),
    ]
    assert ctx.rejected[2][0] == b"\xff,2"


def test_csv_infer_numbers_keeps_long_ids_as_strings(tmp_path: Path) -> None:
    """With csv_infer_numbers, JSON numbers become numbers; integers over 15 digits (ids) and non-numbers stay text."""
    path = tmp_path / "t.csv"
    path.write_bytes(b"n,f,id,s,lead\n42,-1.5e2,1234567890123456789,12a,007\n")
    assert events(replay(paths=[str(path)], format="csv", csv_infer_numbers=True)) == [
        {"n": 42, "f": -150.0, "id": "1234567890123456789", "s": "12a", "lead": "007"}
    ]
    assert events(replay(paths=[str(path)], format="csv"))[0]["n"] == "42"


def test_a_bad_csv_header_dead_letters_it_and_every_row(tmp_path: Path) -> None:
    """A header with a duplicate name is rejected, and so is each row under it: nothing is shipped with wrong keys."""
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,a\n1,2\n3,4\n")
    ctx = replay(paths=[str(path)], format="csv")
    assert ctx.emitted == []
    header, *rows = rejections(ctx)
    assert header == (f"{path}:1", "csv_invalid_header")
    assert rows == [(f"{path}:2", "csv_no_header"), (f"{path}:3", "csv_no_header")]


CSV_PART = st.sampled_from([b",", b'"', b"\n", b"\r\n", b"a", b"1", b"\xff", b"\xc3\xa9", b"", b" ", b"\x00", b";"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=80), st.lists(CSV_PART, max_size=30).map(b"".join)), infer=st.booleans())
def test_any_csv_bytes_end_as_rows_or_rejections(tmp_path: Path, body: bytes, infer: bool) -> None:
    """Any bytes after a header give rows keyed by it or rejections with a reason, never an exception."""
    path = tmp_path / "any.csv"
    path.write_bytes(b"a,b\n" + body)
    ctx = replay(paths=[str(path)], format="csv", csv_infer_numbers=infer, max_line_bytes=40)
    for data, event, _ in ctx.emitted:
        assert set(event) == {"a", "b"} and json.loads(data) == event
    assert all(reason for _, _, reason, _ in ctx.rejected)


@settings(max_examples=300, deadline=None)
@given(header=st.binary(max_size=30), record=st.binary(max_size=60), too_long=st.booleans(), infer=st.booleans())
def test_the_csv_decoder_turns_any_bytes_into_a_row_or_a_rejection(
    header: bytes, record: bytes, too_long: bool, infer: bool
) -> None:
    """CsvDecoder, given any header and record bytes, returns a row (JSON bytes and their object) or a Rejection."""
    decoder = CsvDecoder(",", infer, 40)
    header_result = decoder.take_header(RawInput(0, len(header), 1, header, False))
    assert header_result is None or isinstance(header_result, Rejection)
    result = decoder.decode(RawInput(len(header), len(header) + len(record), 2, record, too_long))
    if not isinstance(result, Rejection):
        data, event = result
        assert json.loads(data) == event and isinstance(event, dict)
    elif header_result is not None:
        assert result.reason == "csv_no_header"


# --- text, gzip ------------------------------------------------------------------------------------------------------


def test_text_lines_become_records_with_file_and_line(tmp_path: Path) -> None:
    """Each text line is shipped as {field: line, file, line}; empty lines and bad UTF-8 are rejected."""
    path = tmp_path / "t.txt"
    path.write_bytes("première ligne\n\n{not json}\n\xff\n".encode().replace(b"\xc3\xbf", b"\xff"))
    ctx = replay(paths=[str(path)], format="text", text_field="body")
    assert events(ctx) == [
        {"body": "première ligne", "file": str(path), "line": 1},
        {"body": "{not json}", "file": str(path), "line": 3},
    ]
    assert json.loads(ctx.emitted[0][0]) == events(ctx)[0]
    assert rejections(ctx) == [(f"{path}:2", "empty_line"), (f"{path}:4", "invalid_utf8")]


def test_gzip_files_are_read_by_extension_and_by_magic_bytes(tmp_path: Path) -> None:
    """A .gz file and a gzip file without the extension are both decompressed; lines come out byte for byte."""
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(tweet(1) + b"\n" + tweet(2) + b"\n"))
    (tmp_path / "b.log.1").write_bytes(gzip.compress(tweet(3) + b"\n"))
    ctx = replay(paths=[str(tmp_path)])
    assert [d for d, _, _ in ctx.emitted] == [tweet(1), tweet(2), tweet(3)]
    assert ctx.emitted[1][2] == f"{tmp_path / 'a.jsonl.gz'}:2"


def test_truncated_and_corrupt_gzip_are_reported_and_the_source_goes_on(tmp_path: Path) -> None:
    """A cut-short gzip and one with garbage after its header: lines before the damage are sent, the damage is
    dead-lettered naming the file, and the next file is still read."""
    whole = gzip.compress(b"".join(tweet(i) + b"\n" for i in range(200)))
    (tmp_path / "1.jsonl.gz").write_bytes(whole[: len(whole) - 20])
    (tmp_path / "2.jsonl.gz").write_bytes(whole[:12] + b"\x00garbage" * 20)
    (tmp_path / "3.jsonl").write_bytes(tweet(999) + b"\n")
    ctx = replay(paths=[str(tmp_path)])
    reasons = {origin.rsplit(":", 1)[0]: (reason, detail) for _, origin, reason, detail in ctx.rejected}
    assert reasons[str(tmp_path / "1.jsonl.gz")][0] == "gzip_truncated"
    assert reasons[str(tmp_path / "2.jsonl.gz")][0] == "gzip_corrupt"
    assert str(tmp_path / "2.jsonl.gz") in reasons[str(tmp_path / "2.jsonl.gz")][1]
    sent = [e["data"]["id"] for e in events(ctx)]
    assert sent[-1] == "999" and 0 < len(sent) - 1 < 200 and sent[:-1] == [str(i) for i in range(len(sent) - 1)]


# --- paths --------------------------------------------------------------------------------------------------------


def test_a_directory_means_its_visible_files_sorted_not_recursive(tmp_path: Path) -> None:
    """A directory is its files in name order; hidden files and subdirectories are left out; a file named twice is read once."""
    (tmp_path / "b.jsonl").write_bytes(tweet(2) + b"\n")
    (tmp_path / "a.jsonl").write_bytes(tweet(1) + b"\n")
    (tmp_path / ".hidden.jsonl").write_bytes(tweet(9) + b"\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jsonl").write_bytes(tweet(8) + b"\n")
    ctx = replay(paths=[str(tmp_path), str(tmp_path / "a.jsonl"), str(tmp_path / "sub" / "*.jsonl")])
    assert [e["data"]["id"] for e in events(ctx)] == ["1", "2", "8"]


def test_an_empty_directory_is_a_crash_like_an_unmatched_glob(tmp_path: Path) -> None:
    """A directory without files matches nothing: the supervisor sees FileNotFoundError (and restarts with backoff)."""
    with pytest.raises(FileNotFoundError, match="no file matches"):
        replay(paths=[str(tmp_path)])


def test_config_refuses_bad_format_options() -> None:
    """Delimiters must be one safe character, text_field must not clash, follow excludes loop, speed is positive."""
    for bad in (
        {"csv_delimiter": ",,"},
        {"csv_delimiter": '"'},
        {"text_field": "line"},
        {"follow": True, "loop": True},
        {"pace": {"field": "t", "speed": 0}},
        {"format": "xml"},
    ):
        with pytest.raises(ValidationError):
            FileSourceConfig(paths=["x"], **bad)


# --- pace ---------------------------------------------------------------------------------------------------------


def test_pace_replays_at_the_original_spacing_divided_by_speed(tmp_path: Path) -> None:
    """Timestamps 2 s apart at speed 4 are sent 0.5 s apart (within 10 %); ISO, epoch s and epoch ms all count."""
    stamps = ['"2026-01-01T00:00:00Z"', "1767225602", "1767225604000", '"2026-01-01T00:00:06.000+00:00"']
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"".join(f'{{"data": {{"id": "{i}", "created_at": {s}}}}}\n'.encode() for i, s in enumerate(stamps)))
    # Half-second steps: a 10 % bound of 50 ms holds on a loaded machine running two test workers, where 20 ms
    # (speed 10) once did not.
    ctx = replay(paths=[str(path)], pace={"field": "data.created_at", "speed": 4})
    assert len(ctx.emitted) == 4
    offsets = [t - ctx.emitted_at[0] for t in ctx.emitted_at]
    for expected, actual in zip([0.0, 0.5, 1.0, 1.5], offsets, strict=True):
        assert abs(actual - expected) <= 0.1 * max(expected, 0.5), offsets


def test_records_without_a_timestamp_are_sent_at_once_and_counted(tmp_path: Path) -> None:
    """Under pace, a record without a readable timestamp is sent without waiting and counted, not dead-lettered."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"t": 0}\n{"t": "soon"}\n{"x": 1}\n{"t": 0.5}\n')
    source = FileSource(FileSourceConfig(paths=[str(path)], pace={"field": "t", "speed": 1}))
    ctx = RecordingContext()
    source.run(ctx)
    assert len(ctx.emitted) == 4 and ctx.rejected == []
    assert source.unpaced == 2 and [kind for kind, _ in ctx.protocol_messages] == ["unpaced_record"] * 2
    assert ctx.emitted_at[2] - ctx.emitted_at[0] < 0.3 <= ctx.emitted_at[3] - ctx.emitted_at[0]


def test_timestamp_formats() -> None:
    """Epoch seconds, milliseconds, numeric strings, ISO-8601 and X v1.1 dates parse; other values do not."""
    assert parse_timestamp(1767225600) == parse_timestamp(1767225600000) == parse_timestamp("1767225600") == 1767225600
    assert parse_timestamp("2026-01-01T00:00:00Z") == parse_timestamp("2026-01-01T01:00:00+01:00") == 1767225600
    assert parse_timestamp("Thu Jan 01 00:00:00 +0000 2026") == 1767225600
    assert [parse_timestamp(v) for v in (None, True, "nope", float("nan"), {"a": 1}, "9999999-01-01")] == [None] * 6


# --- positions ----------------------------------------------------------------------------------------------------


def test_positions_advance_exactly_over_what_was_handed_over(tmp_path: Path) -> None:
    """positions() names each file by device and inode with the byte offset just past the last input handed over."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(tweet(1) + b"\n{bad\n" + tweet(2) + b"\n")
    second.write_bytes(tweet(3) + b"\r\n" + tweet(4) + b"\n")
    source = FileSource(FileSourceConfig(paths=[str(first), str(second)]))
    ctx = RecordingContext(stop_after_emits=3)
    source.run(ctx)
    a, b = first.stat(), second.stat()
    positions = source.positions()
    assert positions[(a.st_dev, a.st_ino)][:4] == (str(first), a.st_dev, a.st_ino, a.st_size)
    assert positions[(b.st_dev, b.st_ino)][:5] == (str(second), b.st_dev, b.st_ino, len(tweet(3)) + 2, 2)
    assert source.position() == (str(second), b.st_dev, b.st_ino, len(tweet(3)) + 2)
