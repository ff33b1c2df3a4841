"""External bytes -> one JSON record, or a rejection with a reason: the parser every source shares.

`parse_json_record` never raises. Whatever a payload holds, the caller gets either the parsed value or a
`Rejection(reason, detail)` to hand to `ctx.reject`. What an accepted record guarantees downstream:

- its bytes are strict UTF-8 (no replacement, no guessing) and hold exactly one JSON value;
- every string in the value (keys included) is valid Unicode, so `json.dumps(..., ensure_ascii=False)`
  followed by `.encode("utf-8")` (the dead-letter file), and the Kinesis sink's key lookup, cannot fail;
- containers nest at most `MAX_NESTING_DEPTH` deep, far below Python's recursion limit, so any
  recursive consumer (json.dumps, repr, the processor's own json.loads under Lambda's frames) copes.

Rules for the edge cases, each with its reason:

- lone UTF-16 surrogates written as JSON escapes (`"\\ud800"` with no low half) are valid JSON syntax but
  not Unicode characters: rejected as `invalid_unicode` (a surrogate *pair* is one character: accepted);
- `NaN`, `Infinity`, `-Infinity` are not JSON (RFC 8259, section 6): `invalid_json`;
- an integer longer than Python's int-string conversion limit (4300 digits): `number_too_large`;
  a float beyond double range (`1e999`) is valid JSON and accepted (the bytes are shipped unchanged);
- a NUL or other control byte inside a string is invalid JSON; the escape `\\u0000` is accepted;
- a UTF-8 byte-order mark is not JSON: a source strips it only where one may appear (`strip_bom` at the
  start of a file); anywhere else it is `invalid_json`;
- any other exception the parser raises (e.g. MemoryError) is `parse_error` naming the exception.

Details never contain unencodable text and are at most `MAX_DETAIL_CHARS` long.

Speed: an ordinary line costs one `orjson.loads`, one byte translation, a substring search and, above
`2 * MAX_NESTING_DEPTH` bytes, a byte count (all in C): under half of what the stdlib path costs. The
stdlib path (`_parse_slow`, the reference: one `json.loads`, a substring search, two byte counts, a regex
scan for lines with `\\u` escapes, a walk over the containers of lines with more than MAX_NESTING_DEPTH
brackets) decides every input orjson refuses and every input on which the two could differ, so the outcome,
value or rejection with its detail, is the same for every input as if only the stdlib path existed:

- orjson refuses what json accepts but these rules reject or read otherwise (NaN and Infinity, lone
  surrogate escapes, a BOM, `1e999`): the slow path then rejects or accepts it;
- orjson accepts nesting up to 1024 levels: lines that might nest deeper than MAX_NESTING_DEPTH (more
  opening brackets than that) go the slow way;
- orjson reads an integer outside [-2**63, 2**64 - 1] as a float (json: an exact int): lines with 20
  digits in a row, or a minus and 19 digits (within strings too: cheaper to test than to tokenise) go the
  slow way. Every other number agrees: both read integers exactly and decimals correctly rounded;
- duplicate keys: both keep the last value at the first key's place; whitespace, escapes, control
  characters and UTF-8 validity follow RFC 8259 in both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

REASON_INVALID_UTF8 = "invalid_utf8"
REASON_INVALID_JSON = "invalid_json"
REASON_EMPTY_LINE = "empty_line"
REASON_LINE_TOO_LONG = "line_too_long"
REASON_NESTING_TOO_DEEP = "nesting_too_deep"
REASON_INVALID_UNICODE = "invalid_unicode"
REASON_NUMBER_TOO_LARGE = "number_too_large"
REASON_PARSE_ERROR = "parse_error"

UTF8_BOM = b"\xef\xbb\xbf"
_BOM_CHAR = UTF8_BOM.decode("utf-8")
# Real payloads nest under 10 deep (an X v2 line with expansions about 6). Python's json raises
# RecursionError near 1000 levels minus the caller's own frames, which differ between the daemon and Lambda;
# a fixed, much lower limit makes the rule the same everywhere and leaves room for recursive consumers.
MAX_NESTING_DEPTH = 256
# Details can quote decoder messages and exception text; keep dead letters and logs small.
MAX_DETAIL_CHARS = 500
# Only the JSON whitespace characters (RFC 8259): a line of other Unicode spaces is invalid JSON, not empty.
_JSON_WHITESPACE = " \t\r\n"
# The escapes that matter for surrogates, leftmost first: an escaped backslash (so that what follows it is
# text), a high+low surrogate pair (one character), and a single surrogate escape (a lone surrogate).
_ESCAPE_TOKENS = re.compile(
    rb"\\\\"
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    rb"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)
_SINGLE_ESCAPE_BYTES = len(b"\\ud800")
# Nesting deeper than the limit takes more opening brackets than the limit, and twice as many bytes.
_DEEP_MIN_BYTES = 2 * MAX_NESTING_DEPTH
# The fast path's pre-checks in one translated copy of a line. orjson's integers are 64-bit (i64 and u64),
# json's exact at any length: digits and minus signs map to "0", so 20 zeros in a row mark a possible integer
# beyond orjson's range (20 digits, or a minus and 19). Both opening brackets map to "[", counted once.
_PRECHECK_CHARS = bytes(range(256)).translate(bytes.maketrans(b"-0123456789{", b"0" * 11 + b"["))
_RISKY_INTEGER = b"0" * 20
_INT_LIMIT_MESSAGE = "integer string conversion"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why some bytes cannot be a record: `reason` names a metric label, `detail` says where and what."""

    reason: str
    detail: str


class _NotJsonConstant(ValueError):
    pass


def _refuse_constant(name: str) -> NoReturn:
    raise _NotJsonConstant(name)


# One decoder for every call: `json.loads(text, parse_constant=...)` would build a new one each time.
# parse_constant is only called for NaN / Infinity / -Infinity, so ordinary lines pay nothing for it.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_decode: Callable[[str], Any] = _DECODER.decode
_loads_fast: Callable[[bytes], Any] = orjson.loads


def safe_detail(text: str) -> str:
    """`text` shortened to MAX_DETAIL_CHARS and made encodable (lone surrogates become `\\udxxx`)."""
    if len(text) > MAX_DETAIL_CHARS:
        text = text[: MAX_DETAIL_CHARS - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def strip_bom(data: bytes) -> bytes:
    """`data` without a leading UTF-8 byte-order mark (for the first line of a file)."""
    return data[len(UTF8_BOM) :] if data.startswith(UTF8_BOM) else data


def parse_json_record(data: bytes, max_bytes: int, *, truncated: bool = False) -> Any | Rejection:
    """The JSON value in `data`, or a `Rejection`. Never raises.

    `data` is one payload without its line terminator. `truncated` says the caller stopped reading it at
    `max_bytes` (a line with no end in sight); longer payloads are rejected as `line_too_long` either way.
    A returned value is never a `Rejection` (JSON has no such type), so `isinstance` tells them apart.
    The outcome is `_parse_slow`'s for every input; orjson only makes the common case cheaper.
    """
    try:
        size = len(data)
        if not truncated and size <= max_bytes:
            checked = data.translate(_PRECHECK_CHARS)
            if _RISKY_INTEGER not in checked and (size <= _DEEP_MIN_BYTES or checked.count(b"[") <= MAX_NESTING_DEPTH):
                return _loads_fast(data)
    except Exception:  # noqa: BLE001, S110 - refused (or failed): the stdlib path decides and says why
        pass
    return _parse_slow(data, max_bytes, truncated=truncated)


def _parse_slow(data: bytes, max_bytes: int, *, truncated: bool = False) -> Any | Rejection:
    """`parse_json_record` by the stdlib alone: the reference for every rule, and the fallback."""
    try:
        return _parse(data, max_bytes, truncated)
    except Exception as exc:  # noqa: BLE001 - the contract: any payload ends as a record or a rejection
        return Rejection(REASON_PARSE_ERROR, safe_detail(f"{type(exc).__name__}: {exc}"))


def _parse(data: bytes, max_bytes: int, truncated: bool) -> Any | Rejection:
    if truncated or len(data) > max_bytes:
        return Rejection(REASON_LINE_TOO_LONG, f"line longer than {max_bytes} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(REASON_INVALID_UTF8, f"byte {exc.start} ({data[exc.start : exc.start + 1]!r}): {exc.reason}")
    try:
        value = _decode(text)
    except json.JSONDecodeError as exc:
        if not text.strip(_JSON_WHITESPACE):
            return Rejection(REASON_EMPTY_LINE, "empty line" if not text else "blank line (whitespace only)")
        if text.startswith(_BOM_CHAR):
            return Rejection(REASON_INVALID_JSON, "starts with a UTF-8 byte-order mark (allowed only at the start of a file)")
        return Rejection(REASON_INVALID_JSON, safe_detail(str(exc)))
    except _NotJsonConstant as exc:
        return Rejection(REASON_INVALID_JSON, f"{exc} is not a JSON value (RFC 8259 has no NaN or Infinity)")
    except RecursionError:
        return Rejection(REASON_NESTING_TOO_DEEP, f"nesting deeper than {MAX_NESTING_DEPTH} levels")
    except ValueError as exc:
        if _INT_LIMIT_MESSAGE in str(exc):
            return Rejection(REASON_NUMBER_TOO_LARGE, safe_detail(f"integer too long to convert: {exc}"))
        return Rejection(REASON_INVALID_JSON, safe_detail(str(exc)))
    if b"\\u" in data:
        problem = _lone_surrogate(data)
        if problem is not None:
            return problem
    if len(data) > _DEEP_MIN_BYTES and data.count(b"[") + data.count(b"{") > MAX_NESTING_DEPTH and _too_deep(value):
        return Rejection(REASON_NESTING_TOO_DEEP, f"nesting deeper than {MAX_NESTING_DEPTH} levels")
    return value


def _lone_surrogate(data: bytes) -> Rejection | None:
    """The first surrogate escape of valid JSON `data` that the decoder could not pair, as a rejection.

    Only escapes can yield surrogates (strict UTF-8 refuses encoded ones), and the decoder joins a high
    escape directly followed by a low one into one character. In valid JSON every backslash starts an escape,
    so scanning escaped backslashes, pairs and single surrogate escapes from the left sees each escape exactly
    as the decoder did (`\\\\ud800` is a backslash and the text "ud800", not a surrogate).
    """
    for token in _ESCAPE_TOKENS.finditer(data):
        escape = token.group()
        if len(escape) == _SINGLE_ESCAPE_BYTES:
            return Rejection(
                REASON_INVALID_UNICODE,
                f"byte {token.start()}: the escape {escape.decode('ascii')} is a lone UTF-16 surrogate, not a Unicode "
                "character (it cannot be encoded as UTF-8)",
            )
    return None


def _too_deep(value: Any) -> bool:
    """Whether containers nest deeper than MAX_NESTING_DEPTH; walks level by level, without recursion."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_NESTING_DEPTH:
            return True
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
    return False
