"""KPL aggregation: several user records of one shard packed into one Kinesis record.

Format (what the KPL writes and aws-kinesis-agg, the KCL and processor/decoding.py read): the magic bytes
F3 89 9A C2, a protobuf `AggregatedRecord`, then the 16-byte MD5 of the protobuf bytes:

    message AggregatedRecord { repeated string partition_key_table = 1;
                               repeated string explicit_hash_key_table = 2;
                               repeated Record records = 3; }
    message Record { required uint64 partition_key_index = 1; optional uint64 explicit_hash_key_index = 2;
                     required bytes data = 3; repeated Tag tags = 4; }

The protobuf is written by hand: each member's record header (tag, lengths, key indices) is built once when
the member is added, so the aggregate's size is known exactly before a member is taken, and the final bytes
are one join of headers and the members' own data (no protobuf objects, no copy of a member per step).

Decisions:
- Partition keys (and explicit hash keys) are deduplicated within an aggregate: an author's key repeats.
- The explicit hash key table is written only when a member has an explicit hash key; then every member
  carries an index into it (a member without one gets its MD5 hash key in decimal, where Kinesis routes it
  anyway): aws-kinesis-agg reads `table[index]` whenever the table is not empty, and a missing index reads
  as 0, which would hand a member another member's hash key.
- The aggregate goes to the shard of its first member: partition key = the first member's, explicit hash
  key = str(first member's hash_key). The caller groups entries by shard; consumers drop aggregates whose
  members hash outside the shard they landed on.
- A lone member goes as a plain Kinesis record (its own data, no framing): that costs 20+ bytes less, and a
  member too big to fit an aggregate of max_bytes still fits Kinesis's record limit, which the entry builder
  already checked. Such a lone plain record is the only way `size` exceeds max_bytes. Exception: data that
  itself begins with the magic bytes is always framed, or a consumer would read it as an aggregate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sinks.kinesis.records import KinesisEntry

KPL_MAGIC = b"\xf3\x89\x9a\xc2"
KPL_DIGEST_BYTES = 16  # the MD5 trailer
# Magic + digest: what every framed aggregate costs before its protobuf and its partition key.
FRAME_BYTES = len(KPL_MAGIC) + KPL_DIGEST_BYTES

# Protobuf tags: (field number << 3) | wire type; 0 = varint, 2 = length-delimited.
_TAG_PK_TABLE = 0x0A  # AggregatedRecord.partition_key_table (1, bytes)
_TAG_EHK_TABLE = 0x12  # AggregatedRecord.explicit_hash_key_table (2, bytes)
_TAG_RECORD = 0x1A  # AggregatedRecord.records (3, bytes)
_TAG_PK_INDEX = 0x08  # Record.partition_key_index (1, varint)
_TAG_EHK_INDEX = 0x10  # Record.explicit_hash_key_index (2, varint)
_TAG_DATA = 0x1A  # Record.data (3, bytes)
_RECORD_TAG = bytes((_TAG_RECORD,))
_PK_TABLE_TAG = bytes((_TAG_PK_TABLE,))

_VARINT_SHIFT = 7
_VARINT_LOW = 0x7F
_VARINT_MORE = 0x80
_TWO_BYTE_LIMIT = 1 << 14  # values below this take at most two varint bytes


def _encode_varint(value: int) -> bytes:
    """`value` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while value >= _VARINT_MORE:
        out.append((value & _VARINT_LOW) | _VARINT_MORE)
        value >>= _VARINT_SHIFT
    out.append(value)
    return bytes(out)


# Every varint below 16 Ki, built once (~0.7 MB): the lengths and key indices of records up to 16 KB fall
# here, and a tuple index is several times cheaper than encoding them per record.
_SMALL_VARINTS = tuple(_encode_varint(value) for value in range(_TWO_BYTE_LIMIT))


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < _TWO_BYTE_LIMIT else _encode_varint(value)


# The index prefixes of aggregates of up to the default max_records (1,000) keys, built once.
_CACHED_INDICES = 1024
_INDEX_PREFIXES = tuple(bytes((_TAG_PK_INDEX,)) + _varint(index) + bytes((_TAG_DATA,)) for index in range(_CACHED_INDICES))


def _index_prefix(index: int) -> bytes:
    """What stands between a member's record length and its data length when its key has `index`."""
    if index < len(_INDEX_PREFIXES):
        return _INDEX_PREFIXES[index]
    return b"".join((bytes((_TAG_PK_INDEX,)), _encode_varint(index), bytes((_TAG_DATA,))))


def _field(tag: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return bytes((tag,)) + _varint(len(payload)) + payload


def _record_header(pk_index: int, ehk_index: int | None, data_len: int) -> bytes:
    """A member's `records` field up to (not including) its data bytes."""
    inner = bytes((_TAG_PK_INDEX,)) + _varint(pk_index)
    if ehk_index is not None:
        inner += bytes((_TAG_EHK_INDEX,)) + _varint(ehk_index)
    inner += bytes((_TAG_DATA,)) + _varint(data_len)
    return bytes((_TAG_RECORD,)) + _varint(len(inner) + data_len) + inner


def _ehk_of(entry: KinesisEntry) -> str:
    """The member's explicit hash key as sent: its own, else where its partition key routes it."""
    return entry.explicit_hash_key if entry.explicit_hash_key is not None else str(entry.hash_key)


@dataclass(slots=True)
class Aggregate:
    """One Kinesis record carrying one or more user records of ONE shard, in order."""

    members: list[KinesisEntry]
    data: bytes  # magic + AggregatedRecord protobuf + MD5; a lone member's own data (see module docstring)
    partition_key: str  # the first member's
    explicit_hash_key: str | None  # str(first member's hash_key): routes the aggregate with its members
    size: int  # len(data) + len(partition_key utf-8): what Kinesis counts against its limits


class Aggregator:
    """Packs user records of one shard, in order, into aggregates of at most max_bytes and max_records.

    Not thread-safe: one aggregator per shard, used by one thread at a time.
    """

    __slots__ = (
        "_ehk_index",
        "_ehk_table",
        "_max_bytes",
        "_max_records",
        "_members",
        "_parts",
        "_pk_index",
        "_pk_prefix",
        "_pk_table",
        "_size",
    )

    def __init__(self, max_bytes: int, max_records: int) -> None:
        if max_bytes < 1 or max_records < 1:
            raise ValueError(f"max_bytes ({max_bytes}) and max_records ({max_records}) must be at least 1")
        self._max_bytes = max_bytes
        self._max_records = max_records
        self._reset()

    def _reset(self) -> None:
        self._members: list[KinesisEntry] = []
        self._parts: list[bytes] = []  # per member: the pieces of its records field's header, then its data
        self._pk_table: list[bytes] = []  # encoded partition_key_table fields, in index order
        # Without explicit hash keys (the common case) a key's index only ever appears as the same bytes
        # between a member's record length and its data length: keep those bytes per key (the fast path).
        self._pk_prefix: dict[str, bytes] = {}
        # With explicit hash keys (the general path): key -> index, and None until a member has an
        # explicit hash key; from then on every member carries an index into that table.
        self._pk_index: dict[str, int] = {}
        self._ehk_index: dict[str, int] | None = None
        self._ehk_table: list[bytes] = []
        self._size = 0  # the framed aggregate's exact size: magic + protobuf + digest + its partition key

    def __len__(self) -> int:
        return len(self._members)

    @property
    def size(self) -> int:
        """The exact `size` of what flush() would return now (0 when empty), for request and rate budgets."""
        if not self._members:
            return 0
        first = self._members[0]
        if len(self._members) == 1 and not first.record.data.startswith(KPL_MAGIC):
            return len(first.record.data) + len(first.partition_key.encode("utf-8"))
        return self._size

    def add(self, entry: KinesisEntry) -> Aggregate | None:
        """Take `entry`; when it does not fit the aggregate being filled, return that one full and start anew.

        An entry too big to share an aggregate waits alone and leaves, plain, with the next add or flush.
        """
        full = None
        if self._members:
            if len(self._members) < self._max_records and (
                self._take_plain(entry, force=False)
                if self._ehk_index is None and entry.explicit_hash_key is None
                else self._take(entry)
            ):
                return None
            full = self._emit()
        self._start(entry)
        return full

    def flush(self) -> Aggregate | None:
        """The aggregate being filled (None when empty); the aggregator is empty afterwards."""
        return self._emit() if self._members else None

    def _start(self, entry: KinesisEntry) -> None:
        """A fresh aggregate holding `entry`, taken even if alone it exceeds max_bytes (it then goes plain)."""
        self._reset()
        self._size = FRAME_BYTES + len(entry.partition_key.encode("utf-8"))
        if entry.explicit_hash_key is None:
            self._take_plain(entry, force=True)
        else:
            self._ehk_index = {}
            self._append(entry, *self._plan(entry, self._pk_index, self._ehk_index))

    def _take_plain(self, entry: KinesisEntry, *, force: bool) -> bool:
        """The fast path (no explicit hash keys): add `entry` if it fits (or `force`); False: nothing changed."""
        data = entry.record.data
        data_len = len(data)
        key = entry.partition_key
        prefix = self._pk_prefix.get(key)
        pk_field = None
        added = 0
        if prefix is None:
            prefix = _index_prefix(len(self._pk_table))
            encoded = key.encode("utf-8")
            pk_field = b"".join((_PK_TABLE_TAG, _varint(len(encoded)), encoded))
            added = len(pk_field)
        length = _SMALL_VARINTS[data_len] if data_len < _TWO_BYTE_LIMIT else _encode_varint(data_len)
        inner_len = len(prefix) + len(length) + data_len
        outer = _SMALL_VARINTS[inner_len] if inner_len < _TWO_BYTE_LIMIT else _encode_varint(inner_len)
        added += 1 + len(outer) + inner_len
        if not force and self._size + added > self._max_bytes:
            return False
        if pk_field is not None:
            self._pk_prefix[key] = prefix
            self._pk_table.append(pk_field)
        self._members.append(entry)
        self._parts += (_RECORD_TAG, outer, prefix, length, data)
        self._size += added
        return True

    def _plan(
        self, entry: KinesisEntry, pk_index: dict[str, int], ehk_index: dict[str, int] | None
    ) -> tuple[bytes, bytes | None, bytes | None, int]:
        """(header, new pk table field, new ehk table field, bytes added) for `entry` against those tables."""
        pk = entry.partition_key
        pk_at = pk_index.get(pk)
        pk_field = None
        if pk_at is None:
            pk_at = len(pk_index)
            pk_field = _field(_TAG_PK_TABLE, pk.encode("utf-8"))
        ehk_at: int | None = None
        ehk_field: bytes | None = None
        if ehk_index is not None:
            ehk = _ehk_of(entry)
            ehk_at = ehk_index.get(ehk)
            if ehk_at is None:
                ehk_at = len(ehk_index)
                ehk_field = _field(_TAG_EHK_TABLE, ehk.encode("ascii"))
        data_len = len(entry.record.data)
        header = _record_header(pk_at, ehk_at, data_len)
        added = len(header) + data_len + (len(pk_field) if pk_field else 0) + (len(ehk_field) if ehk_field else 0)
        return header, pk_field, ehk_field, added

    def _append(self, entry: KinesisEntry, header: bytes, pk_field: bytes | None, ehk_field: bytes | None, added: int) -> None:
        """The general path's commit: tables, member, header and data, size."""
        if pk_field is not None:
            self._pk_index[entry.partition_key] = len(self._pk_table)
            self._pk_table.append(pk_field)
        if ehk_field is not None and self._ehk_index is not None:
            self._ehk_index[_ehk_of(entry)] = len(self._ehk_table)
            self._ehk_table.append(ehk_field)
        self._members.append(entry)
        self._parts.append(header)
        self._parts.append(entry.record.data)
        self._size += added

    def _take(self, entry: KinesisEntry) -> bool:
        """The general path: add `entry` if the aggregate stays within max_bytes; False: nothing changed."""
        if self._ehk_index is None:
            return self._take_switching_to_ehk(entry)
        planned = self._plan(entry, self._pk_index, self._ehk_index)
        if self._size + planned[3] > self._max_bytes:
            return False
        self._append(entry, *planned)
        return True

    def _take_switching_to_ehk(self, entry: KinesisEntry) -> bool:
        """The first member with an explicit hash key: every member so far gains an index (rare: rebuild)."""
        pk_index: dict[str, int] = {}
        ehk_index: dict[str, int] = {}
        size = FRAME_BYTES + len(self._members[0].partition_key.encode("utf-8"))
        rebuilt: list[tuple[KinesisEntry, bytes, bytes | None, bytes | None, int]] = []
        for member in [*self._members, entry]:
            header, pk_field, ehk_field, added = self._plan(member, pk_index, ehk_index)
            if pk_field is not None:
                pk_index[member.partition_key] = len(pk_index)
            if ehk_field is not None:
                ehk_index[_ehk_of(member)] = len(ehk_index)
            rebuilt.append((member, header, pk_field, ehk_field, added))
            size += added
        if size > self._max_bytes:
            return False
        self._reset()
        self._ehk_index = {}
        self._size = FRAME_BYTES + len(rebuilt[0][0].partition_key.encode("utf-8"))
        for planned in rebuilt:
            self._append(*planned)
        return True

    def _emit(self) -> Aggregate:
        """The aggregate being filled, built; the aggregator is reset only once it is built (nothing lost)."""
        members = self._members
        first = members[0]
        key = first.partition_key
        key_size = len(key.encode("utf-8"))
        if len(members) == 1 and not first.record.data.startswith(KPL_MAGIC):
            aggregate = Aggregate(members, first.record.data, key, str(first.hash_key), len(first.record.data) + key_size)
        else:
            body = b"".join(self._pk_table + self._ehk_table + self._parts)
            data = b"".join((KPL_MAGIC, body, hashlib.md5(body, usedforsecurity=False).digest()))
            aggregate = Aggregate(members, data, key, str(first.hash_key), self._size)
        self._reset()
        return aggregate


def aggregate_all(entries: Sequence[KinesisEntry], max_bytes: int, max_records: int) -> list[Aggregate]:
    """`entries` (all of ONE shard) packed greedily, in order, into as few aggregates as the limits allow."""
    aggregator = Aggregator(max_bytes, max_records)
    out: list[Aggregate] = []
    for entry in entries:
        full = aggregator.add(entry)
        if full is not None:
            out.append(full)
    last = aggregator.flush()
    if last is not None:
        out.append(last)
    return out
