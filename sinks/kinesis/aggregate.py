"""Placeholder (the AGGREGATION helper's module replaces it): KPL aggregated records, one shard's at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sinks.kinesis.records import KinesisEntry

KPL_MAGIC = b"\xf3\x89\x9a\xc2"
_MD5_BYTES = 16


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


@dataclass(slots=True)
class Aggregate:
    members: list[KinesisEntry]
    data: bytes
    partition_key: str
    explicit_hash_key: str | None
    size: int


def _encode(members: list[KinesisEntry]) -> Aggregate:
    keys: dict[str, int] = {}
    hashes: dict[str, int] = {}
    records = bytearray()
    for entry in members:
        key_index = keys.setdefault(entry.partition_key, len(keys))
        record = b"\x08" + _varint(key_index)
        if entry.explicit_hash_key is not None:
            record += b"\x10" + _varint(hashes.setdefault(entry.explicit_hash_key, len(hashes)))
        record += _field(0x1A, entry.data)
        records += _field(0x1A, record)
    body = b"".join(_field(0x0A, k.encode("utf-8")) for k in keys)
    body += b"".join(_field(0x12, h.encode("ascii")) for h in hashes) + bytes(records)
    data = KPL_MAGIC + body + hashlib.md5(body, usedforsecurity=False).digest()
    first = members[0]
    return Aggregate(members, data, first.partition_key, str(first.hash_key),
                     len(data) + len(first.partition_key.encode("utf-8")))


def _cost(entry: KinesisEntry) -> int:
    """An upper bound of what the entry adds to an aggregate (its key and hash key counted as if new)."""
    key = len(entry.partition_key.encode("utf-8"))
    record = 2 + 10 + len(entry.data) + len(_varint(len(entry.data))) + (11 if entry.explicit_hash_key else 0)
    return record + len(_varint(record)) + 1 + key + len(_varint(key)) + 1 + (41 if entry.explicit_hash_key else 0)


class Aggregator:
    def __init__(self, max_bytes: int, max_records: int) -> None:
        self.max_bytes = max_bytes
        self.max_records = max_records
        self._members: list[KinesisEntry] = []
        self._size = len(KPL_MAGIC) + _MD5_BYTES

    def add(self, entry: KinesisEntry) -> Aggregate | None:
        cost = _cost(entry) + (len(entry.partition_key.encode("utf-8")) if not self._members else 0)
        full: Aggregate | None = None
        if self._members and (self._size + cost > self.max_bytes or len(self._members) >= self.max_records):
            full = self.flush()
            cost = _cost(entry) + len(entry.partition_key.encode("utf-8"))
        self._members.append(entry)
        self._size += cost
        return full

    def flush(self) -> Aggregate | None:
        if not self._members:
            return None
        aggregate = _encode(self._members)
        self._members = []
        self._size = len(KPL_MAGIC) + _MD5_BYTES
        return aggregate

    def __len__(self) -> int:
        return len(self._members)


def aggregate_all(entries: Sequence[KinesisEntry], max_bytes: int, max_records: int) -> list[Aggregate]:
    aggregator = Aggregator(max_bytes, max_records)
    out = [a for a in map(aggregator.add, entries) if a is not None]
    last = aggregator.flush()
    return [*out, last] if last is not None else out
