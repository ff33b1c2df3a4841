"""Formats of the file source: one raw input -> (bytes to ship, parsed event) or a `Rejection`. Never raises.

- `jsonl`: each line is one JSON value, shipped byte for byte (rules in sources/parsing.py).
- `csv`: the first record is the header; each further record becomes a JSON object keyed by it. Header
  names with dots nest (`data.id,data.text` -> `{"data": {"id": ..., "text": ...}}`, the X v2 shape the
  processor maps). Values stay strings unless `infer_numbers`: then a field that is a JSON integer of at
  most `MAX_INFERRED_DIGITS` digits, or a finite JSON decimal, becomes a number (longer integers such as
  tweet ids stay strings, exact). A record with another field count than the header, bad UTF-8 or broken
  quoting is rejected.
- `text`: each line becomes `{"<field>": line, "file": path, "line": n}`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from typing import Any

from sources.file_read import RawInput
from sources.parsing import (
    REASON_EMPTY_LINE,
    REASON_INVALID_UTF8,
    REASON_LINE_TOO_LONG,
    REASON_PARSE_ERROR,
    Rejection,
    parse_json_record,
    safe_detail,
)

REASON_CSV_COLUMNS = "csv_column_count"
REASON_CSV_INVALID = "csv_invalid"
REASON_CSV_HEADER = "csv_invalid_header"
REASON_CSV_NO_HEADER = "csv_no_header"
# Integers beyond 2**53 lose digits in JavaScript and DynamoDB clients that go through doubles; 15 digits
# always fit, so larger ones (ids) stay strings.
MAX_INFERRED_DIGITS = 15
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")

Decoded = tuple[bytes, Any] | Rejection


def _text(raw: RawInput, limit: int) -> str | Rejection:
    if raw.too_long or len(raw.data) > limit:
        return Rejection(REASON_LINE_TOO_LONG, f"line longer than {limit} bytes")
    try:
        return raw.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(REASON_INVALID_UTF8, f"byte {exc.start} ({raw.data[exc.start : exc.start + 1]!r}): {exc.reason}")


def _ship(event: Any) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode("utf-8")


def decode_jsonl(raw: RawInput, limit: int) -> Decoded:
    parsed = parse_json_record(raw.data, limit, truncated=raw.too_long)
    return parsed if isinstance(parsed, Rejection) else (raw.data, parsed)


def decode_text(raw: RawInput, limit: int, field: str, path: str) -> Decoded:
    text = _text(raw, limit)
    if isinstance(text, Rejection):
        return text
    if not text:
        return Rejection(REASON_EMPTY_LINE, "empty line")
    event = {field: text, "file": path, "line": raw.line}
    return _ship(event), event


class CsvDecoder:
    """Decodes one CSV file's records; the first one it is given is the header."""

    def __init__(self, delimiter: str, infer_numbers: bool, limit: int) -> None:
        self.delimiter = delimiter
        self.infer_numbers = infer_numbers
        self.limit = limit
        self.header: list[list[str]] | None = None
        self.header_problem: str | None = None

    def reset(self) -> None:
        self.header, self.header_problem = None, None

    @property
    def has_header(self) -> bool:
        return self.header is not None or self.header_problem is not None

    def take_header(self, raw: RawInput) -> Rejection | None:
        """Reads the header record; a rejection (the header is dead-lettered, and every row after it too)."""
        fields = self._fields(raw)
        problem = f"header: {fields.detail}" if isinstance(fields, Rejection) else _header_problem(fields)
        if problem is None and not isinstance(fields, Rejection):
            self.header = [name.split(".") for name in fields]
            return None
        self.header_problem = safe_detail(problem or "unusable header")
        return Rejection(REASON_CSV_HEADER, self.header_problem)

    def decode(self, raw: RawInput) -> Decoded:
        if self.header is None:
            return Rejection(REASON_CSV_NO_HEADER, f"the file's header is unusable ({self.header_problem})")
        fields = self._fields(raw)
        if isinstance(fields, Rejection):
            return fields
        if len(fields) != len(self.header):
            return Rejection(REASON_CSV_COLUMNS, f"row has {len(fields)} fields, the header {len(self.header)}")
        event: dict[str, Any] = {}
        for path, value in zip(self.header, fields, strict=True):
            target = event
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = self._value(value)
        return _ship(event), event

    def _fields(self, raw: RawInput) -> list[str] | Rejection:
        text = _text(raw, self.limit)
        if isinstance(text, Rejection):
            return text
        if not text:
            return Rejection(REASON_EMPTY_LINE, "empty line")
        try:
            rows = list(csv.reader([text], delimiter=self.delimiter, strict=True))
        except csv.Error as exc:
            return Rejection(REASON_CSV_INVALID, safe_detail(str(exc)))
        except Exception as exc:  # noqa: BLE001 - the contract: any record ends as a row or a rejection
            return Rejection(REASON_PARSE_ERROR, safe_detail(f"{type(exc).__name__}: {exc}"))
        if len(rows) != 1:
            return Rejection(REASON_CSV_INVALID, f"{len(rows)} records where one was expected")
        return rows[0]

    def _value(self, value: str) -> Any:
        if not self.infer_numbers:
            return value
        if _INTEGER.fullmatch(value):
            return int(value) if len(value.lstrip("-")) <= MAX_INFERRED_DIGITS else value
        if _DECIMAL.fullmatch(value):
            number = float(value)
            return number if math.isfinite(number) else value
        return value


def _header_problem(fields: list[str]) -> str | None:
    paths: set[tuple[str, ...]] = set()
    for name in fields:
        parts = tuple(name.split("."))
        if not all(parts):
            return f"column name {name!r} is empty or has an empty part between dots"
        if parts in paths:
            return f"column name {name!r} appears twice"
        paths.add(parts)
    for parts in paths:
        for cut in range(1, len(parts)):
            if parts[:cut] in paths:
                return f"column {'.'.join(parts[:cut])!r} is both a value and the parent of {'.'.join(parts)!r}"
    return None
