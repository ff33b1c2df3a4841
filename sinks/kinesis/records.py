"""One record -> one PutRecords entry: partition key from the event, size as Kinesis counts it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sinks.base import Record, RecordRejected

MAX_PARTITION_KEY_CHARS = 256
REASON_RECORD_TOO_LARGE = "record_too_large"


@dataclass(slots=True)
class KinesisEntry:
    record: Record
    partition_key: str
    size: int  # data + partition key in UTF-8: what counts against Kinesis's record and request limits


class EntryBuilder:
    """Builds entries; paths are split once here, not per record."""

    def __init__(self, partition_key_paths: Sequence[str], max_record_bytes: int) -> None:
        self.paths = [tuple(path.split(".")) for path in partition_key_paths]
        self.max_record_bytes = max_record_bytes

    def build(self, record: Record) -> KinesisEntry:
        key = self.partition_key(record)
        size = len(record.data) + len(key.encode("utf-8"))
        if size > self.max_record_bytes:
            raise RecordRejected(
                REASON_RECORD_TOO_LARGE,
                f"{size} bytes (data + partition key) > max_record_bytes {self.max_record_bytes}",
            )
        return KinesisEntry(record, key, size)

    def partition_key(self, record: Record) -> str:
        for path in self.paths:
            value = _lookup(record.event, path)
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, str | int):
                text = str(value)
                if text:
                    return text[:MAX_PARTITION_KEY_CHARS]
        # No key in the record: the MD5 of its bytes spreads such records evenly over the shards while a
        # record resent after a failure still maps to the same shard.
        return hashlib.md5(record.data, usedforsecurity=False).hexdigest()


def _lookup(event: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(event, dict):
            return None
        event = event.get(part)
    return event
