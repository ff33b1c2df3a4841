"""One record -> one PutRecords entry: partition key from the event, size as Kinesis counts it.

Partition key rule: the record's own `partition_key` when set (a source's transforms chose it), else the
first configured path whose value is a non-empty string or an integer gives the key. A key Kinesis could
refuse as too long (more than 256 characters, counted both as code points and as UTF-16 units, since either
may be what "characters" means) or that cannot be sent as UTF-8 (a lone surrogate) is replaced by the
SHA-256 hex digest of the whole key: distinct keys stay distinct and the same key always reaches the same
shard, where cutting keys short would pile every key sharing a prefix onto one shard. A record without a
usable key gets the MD5 hex digest of its bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sinks.base import Record, RecordRejected, key_text

MAX_PARTITION_KEY_CHARS = 256
# Bytes of one UTF-16 code unit: a character outside the Basic Multilingual Plane takes two units.
_UTF16_UNIT_BYTES = 2
REASON_RECORD_TOO_LARGE = "record_too_large"
REASON_INVALID_DATA = "invalid_data"


try:
    # CPython's own MD5 (HACL*): for a short key about 3x cheaper than OpenSSL's through hashlib, whose
    # per-call setup dominates; the same digest. Not part of every build, hence the fallback.
    from _md5 import md5 as _md5  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - builds without the module

    def _md5(data: bytes) -> Any:
        return hashlib.md5(data, usedforsecurity=False)


def hash_key_of(partition_key: str) -> int:
    """The 128-bit hash key Kinesis routes a partition key by: MD5 of its UTF-8 bytes, big-endian."""
    return int.from_bytes(_md5(partition_key.encode("utf-8")).digest(), "big")


@dataclass(slots=True)
class KinesisEntry:
    record: Record
    partition_key: str
    size: int  # data + partition key in UTF-8: what counts against Kinesis's record and request limits
    hash_key: int  # where Kinesis routes it: the explicit hash key, else MD5(partition key)
    explicit_hash_key: str | None = None  # sent as ExplicitHashKey (decimal) when set
    attempts: int = 0  # sends so far
    first_attempt_at: float = 0.0  # time.monotonic() of the first send, against retry.max_age
    last_error: str = ""  # the code of the last refusal, for the dead letter's detail
    shard_id: str | None = None  # set once Kinesis took it
    sequence_number: str | None = None  # set once Kinesis took it

    @property
    def data(self) -> bytes:
        return self.record.data


def key_fits(key: str) -> bool:
    """Whether Kinesis takes `key` as it is: 1-256 characters however counted, and valid UTF-8."""
    if not key or len(key) > MAX_PARTITION_KEY_CHARS:
        return False
    if key.isascii():  # one byte, one code point, one UTF-16 unit each: the length says it all
        return True
    try:
        units = len(key.encode("utf-16-le")) // _UTF16_UNIT_BYTES
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return units <= MAX_PARTITION_KEY_CHARS


def hashed_key(key: str) -> str:
    """The stand-in for a key Kinesis would refuse: SHA-256 of the whole key (64 hex characters)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


class EntryBuilder:
    """Builds entries; paths are split once here, not per record."""

    def __init__(self, partition_key_paths: Sequence[str], max_record_bytes: int) -> None:
        self.paths = [tuple(path.split(".")) for path in partition_key_paths]
        self.max_record_bytes = max_record_bytes

    def build(self, record: Record) -> KinesisEntry:
        if not isinstance(record.data, bytes):
            raise RecordRejected(REASON_INVALID_DATA, f"record data is {type(record.data).__name__}, not bytes")
        key = self.partition_key(record)
        size = len(record.data) + (len(key) if key.isascii() else len(key.encode("utf-8")))
        if size > self.max_record_bytes:
            raise RecordRejected(
                REASON_RECORD_TOO_LARGE,
                f"{size} bytes (data + partition key) > max_record_bytes {self.max_record_bytes}",
            )
        return KinesisEntry(record, key, size, hash_key_of(key))

    def partition_key(self, record: Record) -> str:
        chosen = record.partition_key
        if chosen:  # set before the sink (a source's partition_key transform): the same rules as any key
            return chosen if key_fits(chosen) else hashed_key(chosen)
        for path in self.paths:
            text = key_text(_lookup(record.event, path))
            if text:
                return text if key_fits(text) else hashed_key(text)
        # No key in the record: the MD5 of its bytes spreads such records evenly over the shards while a
        # record resent after a failure still maps to the same shard.
        return hashlib.md5(record.data, usedforsecurity=False).hexdigest()


def _lookup(event: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(event, dict):
            return None
        event = event.get(part)
    return event
