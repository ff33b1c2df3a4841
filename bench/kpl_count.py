"""What the null Kinesis endpoint counts in a record: the user records of a KPL aggregate (without
deaggregating it) and the PUT payload units it costs."""

from __future__ import annotations

import hashlib

# Billing: a PUT payload unit is a 25 KB chunk of a record (data + partition key); the pricing page counts
# KB as 1,024 bytes ("rounded up to the nearest 1 KB (1,024 bytes)"), so 25,600 bytes a unit.
PUT_PAYLOAD_UNIT_BYTES = 25 * 1024
KPL_MAGIC = b"\xf3\x89\x9a\xc2"
# base64 of the magic's first bytes: 3 bytes -> "84ma", the 4th byte's top 6 bits -> "w". A record whose
# base64 does not start so is not an aggregate, and is never decoded.
KPL_MAGIC_B64 = "84maw"
_KPL_MD5_BYTES = 16
_PROTOBUF_RECORDS_FIELD = 3
_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LENGTH, _WIRE_FIXED32 = 0, 1, 2, 5


def count_kpl_records(blob: bytes) -> int | None:
    """User records in a KPL aggregate (magic, AggregatedRecord protobuf, MD5 of it), or None when `blob` is
    not a well-formed aggregate (no magic, a bad MD5, a protobuf that does not parse): it is then one record."""
    if len(blob) < len(KPL_MAGIC) + _KPL_MD5_BYTES or not blob.startswith(KPL_MAGIC):
        return None
    body = blob[len(KPL_MAGIC) : -_KPL_MD5_BYTES]
    if hashlib.md5(body, usedforsecurity=False).digest() != blob[-_KPL_MD5_BYTES:]:
        return None
    count, position, end = 0, 0, len(body)
    while position < end:
        key, position = _varint(body, position)
        if position < 0:
            return None
        field, wire = key >> 3, key & 7
        if wire == _WIRE_LENGTH:
            length, position = _varint(body, position)
            if position < 0 or position + length > end:
                return None
            position += length
            count += field == _PROTOBUF_RECORDS_FIELD
        elif wire == _WIRE_VARINT:
            _, position = _varint(body, position)
            if position < 0:
                return None
        elif wire in (_WIRE_FIXED64, _WIRE_FIXED32):
            position += 8 if wire == _WIRE_FIXED64 else 4
            if position > end:
                return None
        else:
            return None
    return count


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """(value, next position), or (0, -1) when the varint runs past the end or over 10 bytes."""
    value, shift, end = 0, 0, len(data)
    while position < end and shift < 70:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
    return 0, -1


def put_payload_units(size: int) -> int:
    """PUT payload units one Kinesis record of `size` bytes (data + partition key) costs."""
    return max(1, -(-size // PUT_PAYLOAD_UNIT_BYTES))
