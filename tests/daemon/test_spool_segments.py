"""The spool's segment format (daemon/spool_segments.py): frames, recovery scans of damaged bytes, the commit file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.durable import LOCAL
from daemon.spool_segments import (
    HEADER_BYTES,
    ORIGIN_MAX_BYTES,
    FrameReader,
    SpoolFormatError,
    decode_commit,
    decode_header,
    encode_commit,
    encode_frame,
    encode_header,
    parse_segment_name,
    scan_segment,
    segment_name,
)

Item = tuple[float, str, bytes]
records = st.lists(
    st.tuples(st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40), st.binary(max_size=300)),
    min_size=1,
    max_size=8,
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def segment_bytes(segment_id: int, items: list[tuple[float, str, bytes]]) -> tuple[bytes, list[int]]:
    """A segment holding `items`, and the end offset of each frame."""
    out, ends = bytearray(encode_header(segment_id)), []
    for appended_at, origin, data in items:
        out += encode_frame(appended_at, origin, data)
        ends.append(len(out))
    return bytes(out), ends


@FUZZ
@given(items=records)
def test_frames_round_trip(items: list[tuple[float, str, bytes]]) -> None:
    """Every frame reads back with its time, origin (as valid UTF-8) and data, and ends where it was written."""
    raw, ends = segment_bytes(7, items)
    reader = FrameReader(io.BytesIO(raw), HEADER_BYTES)
    frames = list(reader)
    assert reader.error is None
    assert [(f.appended_at, f.data, f.end) for f in frames] == [(t, d, e) for (t, _, d), e in zip(items, ends, strict=True)]
    assert [f.origin for f in frames] == [o.encode("utf-8", "replace").decode("utf-8") for _, o, _ in items]


@FUZZ
@given(items=records, data=st.data())
def test_a_cut_segment_scans_to_the_last_whole_frame(tmp_path: Path, items: list[Item], data: st.DataObject) -> None:
    """A segment cut anywhere after its header yields exactly the frames before the cut; a cut mid-frame is an error."""
    raw, ends = segment_bytes(3, items)
    cut = data.draw(st.integers(min_value=HEADER_BYTES, max_value=len(raw)))
    path = tmp_path / segment_name(3)
    path.write_bytes(raw[:cut])
    scanned = scan_segment(LOCAL, path, 3, 0)
    whole = [e for e in ends if e <= cut]
    assert scanned.records == len(whole)
    assert scanned.end == (whole[-1] if whole else HEADER_BYTES)
    assert (scanned.error is None) == (cut in (HEADER_BYTES, *ends))


@FUZZ
@given(items=records, data=st.data())
def test_a_flipped_byte_stops_the_scan_at_its_frame(tmp_path: Path, items: list[Item], data: st.DataObject) -> None:
    """Corrupting any byte of a frame (length, CRC or payload): the scan keeps the frames before it, reports the rest."""
    raw, ends = segment_bytes(3, items)
    where = data.draw(st.integers(min_value=HEADER_BYTES, max_value=len(raw) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    damaged = bytearray(raw)
    damaged[where] ^= flip
    path = tmp_path / segment_name(3)
    path.write_bytes(bytes(damaged))
    scanned = scan_segment(LOCAL, path, 3, 0)
    before = [e for e in ends if e <= where]
    assert scanned.records == len(before)
    assert scanned.end == (before[-1] if before else HEADER_BYTES)
    assert scanned.error is not None


@FUZZ
@given(garbage=st.binary(max_size=400))
def test_any_bytes_after_a_header_scan_without_raising(tmp_path: Path, garbage: bytes) -> None:
    """Arbitrary bytes after a valid header: the scan ends cleanly at some good end within the file, never raises."""
    path = tmp_path / segment_name(1)
    path.write_bytes(encode_header(1) + garbage)
    scanned = scan_segment(LOCAL, path, 1, 0)
    assert HEADER_BYTES <= scanned.end <= HEADER_BYTES + len(garbage)
    assert (scanned.error is None) == (scanned.end == HEADER_BYTES + len(garbage))


@FUZZ
@given(head=st.binary(max_size=HEADER_BYTES * 2))
def test_header_parser_accepts_only_its_own_header(head: bytes) -> None:
    """decode_header raises SpoolFormatError for anything but this segment's header, never another exception."""
    try:
        decode_header(head, 5)
    except SpoolFormatError:
        assert head[:HEADER_BYTES] != encode_header(5)
    else:
        assert head[:HEADER_BYTES] == encode_header(5)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_commit_parser_never_raises_anything_else(raw: bytes) -> None:
    """decode_commit of any bytes returns a (segment, offset) or raises SpoolFormatError."""
    try:
        segment, offset = decode_commit(raw)
    except SpoolFormatError:
        return
    assert segment >= 0 and offset >= 0


def test_commit_round_trip_and_rejections() -> None:
    """A commit file reads back; other versions, types and negative numbers are refused with a reason."""
    assert decode_commit(encode_commit(12, 3456)) == (12, 3456)
    for bad in (b'{"version": 2, "segment": 1, "offset": 1}', b'{"version": 1, "segment": true, "offset": 1}',
                b'{"version": 1, "segment": 1, "offset": -1}', b"[]", b"\xff"):
        with pytest.raises(SpoolFormatError):
            decode_commit(bad)


def test_segment_names_and_long_origins() -> None:
    """Only `<20 digits>.seg` names are segments; an origin longer than the limit is cut to it (still UTF-8)."""
    assert parse_segment_name(segment_name(42)) == 42
    for other in ("commit", "commit.tmp", "00000000000000000001.seg.unusable", "1.seg", "x" * 20 + ".seg"):
        assert parse_segment_name(other) is None
    frame = encode_frame(1.0, "é" * ORIGIN_MAX_BYTES, b"d")
    (parsed,) = FrameReader(io.BytesIO(encode_header(1) + frame), HEADER_BYTES)
    assert len(parsed.origin.encode()) <= ORIGIN_MAX_BYTES and parsed.origin == "é" * (ORIGIN_MAX_BYTES // 2)
