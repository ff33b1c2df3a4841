"""The shared JSON-record parser: each rule with its reason, then properties over arbitrary bytes and JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.sample import sample_lines
from sources import parsing
from sources.parsing import MAX_DETAIL_CHARS, MAX_NESTING_DEPTH, UTF8_BOM, Rejection, parse_json_record, strip_bom

LIMIT = 1024 * 1024
REASONS = {
    parsing.REASON_INVALID_UTF8,
    parsing.REASON_INVALID_JSON,
    parsing.REASON_EMPTY_LINE,
    parsing.REASON_LINE_TOO_LONG,
    parsing.REASON_NESTING_TOO_DEEP,
    parsing.REASON_INVALID_UNICODE,
    parsing.REASON_NUMBER_TOO_LARGE,
    parsing.REASON_PARSE_ERROR,
}


def reason_of(data: bytes, limit: int = LIMIT) -> str | None:
    result = parse_json_record(data, limit)
    return result.reason if isinstance(result, Rejection) else None


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_line"),
        (b" \t\r ", "empty_line"),
        ("\u3000".encode(), "invalid_json"),  # an ideographic space is not JSON whitespace
        (b"\xff\xfe{}", "invalid_utf8"),
        (b'{"a": "\xed\xa0\x80"}', "invalid_utf8"),  # a surrogate encoded in UTF-8 bytes
        (b"{not json", "invalid_json"),
        (b'{"a": 1} {"b": 2}', "invalid_json"),
        (b'"a\x00b"', "invalid_json"),  # a raw NUL inside a string
        (b"\x00", "invalid_json"),
        (b"NaN", "invalid_json"),
        (b'{"x": [1, -Infinity]}', "invalid_json"),
        (UTF8_BOM + b"{}", "invalid_json"),  # a BOM where no BOM may be
        (b"1" * 5000, "number_too_large"),
        (b'{"id": ' + b"9" * 4301 + b"}", "number_too_large"),
        (b'"\\ud800"', "invalid_unicode"),
        (b'{"\\uDFFF": 1}', "invalid_unicode"),
        (b'"\\\\ud83d\\ude00"', "invalid_unicode"),  # escaped backslash, then a lone low surrogate
        (b'"\\ud83d\\\\ude00"', "invalid_unicode"),  # a lone high surrogate, then text
        (nested(MAX_NESTING_DEPTH + 1), "nesting_too_deep"),
        (b'{"a":' * (MAX_NESTING_DEPTH + 1) + b"1" + b"}" * (MAX_NESTING_DEPTH + 1), "nesting_too_deep"),
        (nested(5000), "nesting_too_deep"),  # deep enough for json's own RecursionError
        (b"[" * 200_000, "nesting_too_deep"),
    ],
)
def test_each_kind_of_bad_payload_gets_its_reason(data: bytes, reason: str) -> None:
    """Every hostile payload kind ends as a rejection with its own reason, never as an exception."""
    assert reason_of(data) == reason


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b'"\\ud83d\\ude80"', "🚀"),  # a surrogate pair is one character
        (b'"\\\\ud800"', "\\ud800"),  # an escaped backslash followed by text, not a surrogate
        (b'"\\u0000"', "\x00"),
        (b"1e999", math.inf),  # valid JSON; Python reads it as infinity and the bytes ship unchanged
        (nested(MAX_NESTING_DEPTH), json.loads(nested(MAX_NESTING_DEPTH))),
        (b'  {"a": []}\t', {"a": []}),
        (b"null", None),
    ],
)
def test_edge_cases_that_are_json_are_accepted(data: bytes, value: Any) -> None:
    """Valid JSON at the edges of the rules (pairs, escaped backslashes, NUL escapes, the depth limit) is a record."""
    assert parse_json_record(data, LIMIT) == value


def test_too_long_and_truncated_payloads_are_rejected() -> None:
    """A payload over the limit, or one the caller stopped reading, is line_too_long."""
    assert reason_of(b'{"a": "xxxx"}', limit=5) == "line_too_long"
    assert parse_json_record(b"{}", LIMIT, truncated=True) == Rejection("line_too_long", f"line longer than {LIMIT} bytes")


def test_any_exception_of_the_decoder_becomes_a_parse_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception nobody foresaw (here MemoryError, from both decoders) is a parse_error rejection naming it."""

    def exhausted(text: str | bytes) -> Any:
        raise MemoryError("no room for \ud800")

    monkeypatch.setattr(parsing, "_loads_fast", exhausted)
    monkeypatch.setattr(parsing, "_decode", exhausted)
    result = parse_json_record(b"{}", LIMIT)
    assert isinstance(result, Rejection) and result.reason == "parse_error"
    assert result.detail.startswith("MemoryError: no room for ") and result.detail.encode("utf-8")


def test_details_are_short_and_encodable() -> None:
    """A detail quoting odd text is cut to MAX_DETAIL_CHARS and has no unencodable characters."""
    assert len(parsing.safe_detail("x" * 5000)) == MAX_DETAIL_CHARS
    assert parsing.safe_detail("a\ud800b") == "a\\ud800b"


def test_strip_bom_removes_only_a_leading_mark() -> None:
    """Only a byte-order mark at the very start is removed."""
    assert strip_bom(UTF8_BOM + b"{}") == b"{}"
    assert strip_bom(b" " + UTF8_BOM + b"{}") == b" " + UTF8_BOM + b"{}"
    assert strip_bom(b"{}") == b"{}"


def test_sample_tweets_parse_to_what_json_loads_gives() -> None:
    """Good tweets, raw UTF-8 or ASCII-escaped (surrogate pairs for emoji), are accepted unchanged."""
    for line in sample_lines(300, seed=11):
        escaped = json.dumps(json.loads(line)).encode()
        assert parse_json_record(line, LIMIT) == json.loads(line) == parse_json_record(escaped, LIMIT)


# Properties -----------------------------------------------------------------------------------------------


def check_outcome(data: bytes, result: Any) -> None:
    """The contract: a rejection with a known reason and a clean detail, or a value the pipeline can handle."""
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert isinstance(result.detail, str) and result.detail and len(result.detail) <= MAX_DETAIL_CHARS
        result.detail.encode("utf-8")
        return
    text = data.decode("utf-8")  # accepted bytes are strict UTF-8
    assert not _has_nan(result)  # so the comparison below is meaningful
    assert result == json.loads(text)
    # What the dead-letter file and the logs do with a record: must not raise.
    json.dumps(result, ensure_ascii=False).encode("utf-8")


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_has_nan(child) for child in children)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_end_as_a_record_or_a_rejection(data: bytes) -> None:
    """Any bytes at all: a record (valid UTF-8, encodable) or a rejection with a known reason; nothing raises."""
    check_outcome(data, parse_json_record(data, LIMIT))


# Text that makes escapes interesting: lone and paired surrogates, backslashes, and the letters of an escape
# (so that a backslash followed by "ud800" text sits next to real surrogates).
_FRAGMENTS = ["\\", "ud800", "udc00", "u0000", "\ud800", "\udc00", "\ud83d", "\ude80", "a", "é", '"', "\x00"]
SURROGATE_TEXT = st.one_of(
    st.text(
        alphabet=st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
        max_size=12,
    ),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=8).map("".join),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | SURROGATE_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(SURROGATE_TEXT, children, max_size=4),
    max_leaves=20,
)


def lone_surrogates(value: Any) -> bool:
    """Whether json.loads' result holds a lone surrogate anywhere (the oracle, by brute force)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_dumped_json_is_accepted_unless_it_holds_a_lone_surrogate(value: Any, ensure_ascii: bool) -> None:
    """JSON as json.dumps writes it: accepted equal to json.loads' result, or invalid_unicode exactly when lone."""
    try:
        data = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8")
    except UnicodeEncodeError:  # raw lone surrogates cannot even be written as UTF-8 bytes
        data = json.dumps(value, ensure_ascii=True).encode("utf-8")
    expected = json.loads(data)
    result = parse_json_record(data, LIMIT)
    if lone_surrogates(expected):
        assert isinstance(result, Rejection) and result.reason == "invalid_unicode"
    else:
        assert result == expected
    check_outcome(data, result)


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    """A dumped JSON value with a few bytes flipped, inserted, deleted or cut off."""
    data = bytearray(json.dumps(draw(JSON_VALUES), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if action == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.sampled_from([b"\\", b'"', b"[", b"{", b"\\ud800", b"\x00", b"\xef\xbb\xbf", b"NaN", b"\xc3"]))
        elif action == "delete" and at < len(data):
            del data[at]
        elif action == "truncate":
            del data[at:]
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(corrupted())
def test_corrupted_json_ends_as_a_record_or_a_rejection(data: bytes) -> None:
    """Damaged JSON never raises; when accepted it is exactly what json.loads reads from the same text."""
    check_outcome(data, parse_json_record(data, LIMIT))
