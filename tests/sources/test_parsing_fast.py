"""The orjson fast path of parse_json_record: the same value or rejection as the stdlib path for every input,
taken for ordinary records, left wherever orjson reads JSON otherwise (big integers, deep nesting, ...)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.sample import sample_lines
from sources import parsing
from sources.parsing import MAX_NESTING_DEPTH, UTF8_BOM, Rejection, _parse_slow, parse_json_record

LIMIT = 1024 * 1024


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down, floats by their sign and bits, dicts in key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_agrees(data: bytes, limit: int = LIMIT) -> Any:
    fast, slow = parse_json_record(data, limit), _parse_slow(data, limit)
    assert same(fast, slow), (data[:200], fast, slow)
    return fast


class _NoSlowPath(Exception):
    pass


def _refuse_slow(data: bytes, max_bytes: int, *, truncated: bool = False) -> Any:
    raise _NoSlowPath(data[:80])


# Where orjson and json differ, each kind once: the outcome must be the stdlib path's.
DIFFERENCES = [
    pytest.param(b"18446744073709551616", 2**64, id="int-above-u64"),
    pytest.param(b"-9223372036854775809", -(2**63) - 1, id="int-below-i64"),
    pytest.param(b"-9223372036854775808", -(2**63), id="i64-min-goes-slow-but-agrees"),
    pytest.param(b'{"n": [' + b"9" * 30 + b"]}", {"n": [int("9" * 30)]}, id="long-int-in-container"),
    pytest.param(b"1e999", math.inf, id="float-beyond-double"),
    pytest.param(b"[" * 1000 + b"]" * 1000, "nesting_too_deep", id="nesting-orjson-accepts"),
    pytest.param(b'{"a":' * 300 + b"1" + b"}" * 300, "nesting_too_deep", id="object-nesting"),
    pytest.param(b'"\\ud800"', "invalid_unicode", id="lone-high-surrogate"),
    pytest.param(b'"\\udc00\\ud800"', "invalid_unicode", id="reversed-pair"),
    pytest.param(b"[NaN]", "invalid_json", id="nan"),
    pytest.param(b"-Infinity", "invalid_json", id="infinity"),
    pytest.param(UTF8_BOM + b"{}", "invalid_json", id="bom"),
    pytest.param(b"1" * 5000, "number_too_large", id="int-beyond-conversion-limit"),
    pytest.param(b"", "empty_line", id="empty"),
    pytest.param(b" \t", "empty_line", id="blank"),
    pytest.param(b'"\xed\xa0\x80"', "invalid_utf8", id="encoded-surrogate"),
]


@pytest.mark.parametrize(("data", "expected"), DIFFERENCES)
def test_where_orjson_differs_the_outcome_is_the_stdlib_one(data: bytes, expected: Any) -> None:
    """Each known orjson/json difference ends as the stdlib path decides: exact big ints, the same rejections."""
    result = assert_agrees(data)
    if isinstance(result, Rejection):
        assert result.reason == expected
    else:
        assert same(result, expected)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"9999999999999999999", 9999999999999999999),  # 19 digits: beyond i64, within u64, exact in orjson
        (b"-922337203685477580", -922337203685477580),  # a minus and 18 digits (19 go the slow way)
        (b'{"a": 1, "b": 2, "a": 3}', {"a": 3, "b": 2}),  # duplicate keys: the last value, the first place
        (b"[" * MAX_NESTING_DEPTH + b"]" * MAX_NESTING_DEPTH, json.loads(b"[" * MAX_NESTING_DEPTH + b"]" * MAX_NESTING_DEPTH)),
        (b'"\\ud83d\\ude80 \\u0000"', "🚀 \x00"),
        (b"[0.1, -0.0, 5e-324, 1.7976931348623157e308, 9007199254740993.0]", [0.1, -0.0, 5e-324, sys.float_info.max, 2.0**53]),
    ],
)
def test_the_fast_path_reads_edge_cases_exactly(monkeypatch: pytest.MonkeyPatch, data: bytes, expected: Any) -> None:
    """Inputs the fast path keeps (19-digit ints, duplicates, the depth limit, pairs, floats) read like json."""
    assert same(_parse_slow(data, LIMIT), expected)
    monkeypatch.setattr(parsing, "_parse_slow", _refuse_slow)
    assert same(parse_json_record(data, LIMIT), expected)


def test_ordinary_tweets_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sample tweets, raw UTF-8 or ASCII-escaped, never need the stdlib path (so the speed-up is real)."""
    lines = sample_lines(300, seed=5)
    escaped = [json.dumps(json.loads(line)).encode() for line in lines]
    expected = [json.loads(line) for line in lines]
    monkeypatch.setattr(parsing, "_parse_slow", _refuse_slow)
    assert [parse_json_record(line, LIMIT) for line in lines] == expected
    assert [parse_json_record(line, LIMIT) for line in escaped] == expected


def test_a_failing_fast_decoder_falls_back_to_the_stdlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever orjson raises (here MemoryError), the stdlib path still reads the record."""

    def exhausted(data: bytes) -> Any:
        raise MemoryError("no room")

    monkeypatch.setattr(parsing, "_loads_fast", exhausted)
    assert parse_json_record(b'{"a": [1]}', LIMIT) == {"a": [1]}


@pytest.mark.parametrize("data", ["{}", memoryview(b"{}"), bytearray(b'{"a": 1}'), None, 7])
def test_payloads_of_other_types_get_the_stdlib_outcome_and_never_raise(data: Any) -> None:
    """A caller's type slip (str, memoryview, None...) is the stdlib path's outcome (parse_error), not an exception."""
    assert_agrees(data)


def test_limits_are_checked_before_either_decoder() -> None:
    """Too long or truncated payloads are line_too_long on the fast path too, with the same detail."""
    assert parse_json_record(b"[1, 2]", 5) == _parse_slow(b"[1, 2]", 5) == Rejection("line_too_long", "line longer than 5 bytes")
    assert parse_json_record(b"{}", LIMIT, truncated=True) == _parse_slow(b"{}", LIMIT, truncated=True)


# Properties: the same outcome as the stdlib path for any input ---------------------------------------------

# JSON-ish pieces that sit where orjson and json part ways, glued in any order (mostly invalid, sometimes not).
_PIECES = [
    b"[", b"]", b"{", b"}", b'"', b":", b",", b" ", b"\t", b"\r", b"\n", b"\x0c", b"\x00", b"\x7f",
    b"\\", b"\\u", b"\\ud800", b"\\udc00", b"\\ud83d\\ude80", b"\\u0000", b"\\\\", b"\\n", b"\\x",
    b"NaN", b"Infinity", b"-Infinity", b"true", b"null", b"-", b"0", b"1", b"9" * 19, b"9" * 20,
    b"-" + b"9" * 19, b"18446744073709551615", b"18446744073709551616", b"1e999", b"1e-400", b".5", b"e5", b"E+",
    UTF8_BOM, b"\xed\xa0\x80", b"\xc3", b"\xa9", b"\xc3\xa9", b"\xf0\x9f\x9a\x80", b"\xf4\x90\x80\x80", b"\xc0\x80", b"\xff",
    b'"a"', b'"k":', b"[]", b"{}", b'{"a":1,"a":2}',
]  # fmt: skip
JSONISH = st.lists(st.sampled_from(_PIECES), max_size=40).map(b"".join)

_NUMBER = st.from_regex(r"-?(0|[1-9][0-9]{0,28})(\.[0-9]{1,28})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)
_TEXT = st.text(alphabet=st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)), max_size=8)
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.integers(min_value=-(2**64), max_value=2**65)
    | st.floats()  # NaN and infinities too: json.dumps writes them as NaN / Infinity
    | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=12,
)


@st.composite
def dumped(draw: st.DrawFn) -> bytes:
    """A JSON value as json.dumps writes it, maybe inside deep nesting, maybe with a number spliced in."""
    text = json.dumps(draw(VALUES), ensure_ascii=draw(st.booleans()))
    depth = draw(st.sampled_from([0, 0, 1, MAX_NESTING_DEPTH - 1, MAX_NESTING_DEPTH, MAX_NESTING_DEPTH + 1, 1100]))
    if draw(st.booleans()):
        text = f"[{text}, {draw(_NUMBER)}]"
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"k":', "}")]))
    return (opener * depth + text + closer * depth).encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_get_the_stdlib_outcome(data: bytes) -> None:
    """Arbitrary bytes: the fast path returns exactly the stdlib path's value or rejection."""
    assert_agrees(data)


@settings(max_examples=400, deadline=None)
@given(JSONISH)
def test_adversarial_json_pieces_get_the_stdlib_outcome(data: bytes) -> None:
    """JSON-ish text of escapes, surrogates, big numbers, constants, BOMs and bad bytes: the stdlib outcome."""
    assert_agrees(data)


@settings(max_examples=300, deadline=None)
@given(dumped())
def test_dumped_values_get_the_stdlib_outcome(data: bytes) -> None:
    """Dumped values (big ints, floats, NaN, lone surrogates, deep nesting): the stdlib outcome, exactly."""
    assert_agrees(data)


@settings(max_examples=300, deadline=None)
@given(_NUMBER)
def test_numbers_read_alike(text: str) -> None:
    """Any JSON number up to 29 digits per part reads to the same int or correctly rounded float."""
    assert_agrees(text.encode())
