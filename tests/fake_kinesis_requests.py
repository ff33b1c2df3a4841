"""Request checking and answer shapes of tests/fake_kinesis.py: what Kinesis validates, as Kinesis words it.

Validation errors name the field like AWS's (1-based ``records.<n>.member.<field>``) and only the first bad one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from typing import Any

# The deaggregator puts its own folder on sys.path, which its messages_pb2 needs to import: take it from there.
from aws_kinesis_agg.deaggregator import iter_deaggregate_records, messages_pb2
from google.protobuf.message import DecodeError

from tests.fake_kinesis_types import (
    EXPLICIT_HASH_KEY,
    KPL_DIGEST_BYTES,
    KPL_MAGIC,
    LIST_SHARDS_DEFAULT_RESULTS,
    LIST_SHARDS_MAX_RESULTS,
    MAX_HASH_KEY,
    MAX_PARTITION_KEY_CHARS,
    MAX_RECORDS_PER_CALL,
    Answer,
    KinesisError,
    ShardInfo,
    StoredRecord,
    UserRecord,
    WireEntry,
    hash_key_of,
)
from tests.fakes import Reply

_UTF16_UNIT_BYTES = 2
# A key of at most this many code points is at most 256 UTF-16 units too (a code point takes one or two).
_ALWAYS_SHORT_KEY_CHARS = MAX_PARTITION_KEY_CHARS // 2
# Parameters that cannot go with NextToken: Kinesis answers InvalidArgumentException (the paginator trap).
_NOT_WITH_NEXT_TOKEN = ("StreamName", "StreamARN", "ExclusiveStartShardId", "ShardFilter", "StreamCreationTimestamp")
_SHARD_FILTERS = ("AFTER_SHARD_ID", "AT_TRIM_HORIZON", "FROM_TRIM_HORIZON", "AT_LATEST", "AT_TIMESTAMP", "FROM_TIMESTAMP")


def _invalid(at: str, value: Any, constraint: str) -> KinesisError:
    shown = "null" if value is None else f"'{str(value)[:64]}'"
    return KinesisError(
        "ValidationException",
        f"1 validation error detected: Value {shown} at '{at}' failed to satisfy constraint: {constraint}",
    )


def parse_entry(record: Any, prefix: str, max_record_bytes: int) -> WireEntry:
    """One PutRecords entry (``prefix`` "records.<n>.member.") or a PutRecord body (``prefix`` "") checked."""
    # The hot path (every entry of every test): plain checks in one go; anything odd is explained below.
    try:
        raw_data, key = record["Data"], record["PartitionKey"]
        if type(raw_data) is str and type(key) is str and 0 < len(key) <= _ALWAYS_SHORT_KEY_CHARS:
            data = binascii.a2b_base64(raw_data, strict_mode=True)
            size = len(data) + len(key.encode("utf-8"))
            explicit = record.get("ExplicitHashKey")
            if size <= max_record_bytes and explicit is None:
                return WireEntry(data, key, None, hash_key_of(key), size)
    except (TypeError, KeyError, binascii.Error, ValueError):
        pass
    return _parse_entry_slowly(record, prefix, max_record_bytes)


def _parse_entry_slowly(record: Any, prefix: str, max_record_bytes: int) -> WireEntry:
    if not isinstance(record, dict):
        raise KinesisError("SerializationException", f"'{prefix or 'body'}' is not a JSON object")
    raw_data = record.get("Data")
    if raw_data is None:
        raise _invalid(f"{prefix}data", None, "Member must not be null")
    if not isinstance(raw_data, str):
        raise KinesisError("SerializationException", f"'{prefix}data' is not a base64 string")
    try:
        data = binascii.a2b_base64(raw_data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise KinesisError("SerializationException", f"'{prefix}data' is not valid base64") from None
    key = record.get("PartitionKey")
    if key is None:
        raise _invalid(f"{prefix}partitionKey", None, "Member must not be null")
    if not isinstance(key, str):
        raise KinesisError("SerializationException", f"'{prefix}partitionKey' is not a string")
    if not key:
        raise _invalid(f"{prefix}partitionKey", key, "Member must have length greater than or equal to 1")
    try:
        key_bytes = key.encode("utf-8")
    except UnicodeEncodeError:
        raise KinesisError("SerializationException", f"'{prefix}partitionKey' is not valid UTF-8") from None
    # Counted both as code points and as UTF-16 units (Kinesis's Java counts units): a key fitting one
    # count only is refused, so a producer that passes here passes there.
    if max(len(key), len(key.encode("utf-16-le")) // _UTF16_UNIT_BYTES) > MAX_PARTITION_KEY_CHARS:
        raise _invalid(f"{prefix}partitionKey", key, f"Member must have length less than or equal to {MAX_PARTITION_KEY_CHARS}")
    if len(data) > max_record_bytes:
        raise _invalid(f"{prefix}data", "java.nio.HeapByteBuffer",
                       f"Member must have length less than or equal to {max_record_bytes}")
    size = len(data) + len(key_bytes)
    if size > max_record_bytes:
        raise _invalid(f"{prefix}data", "java.nio.HeapByteBuffer",
                       f"data + partition key is {size} bytes, more than {max_record_bytes}")
    explicit = record.get("ExplicitHashKey")
    if explicit is None:
        return WireEntry(data, key, None, hash_key_of(key), size)
    if not isinstance(explicit, str) or not EXPLICIT_HASH_KEY.fullmatch(explicit):
        raise _invalid(f"{prefix}explicitHashKey", explicit, r"Member must satisfy regular expression pattern: 0|([1-9]\d{0,38})")
    hash_key = int(explicit)
    if hash_key > MAX_HASH_KEY:
        raise KinesisError("InvalidArgumentException",
                           f"Invalid ExplicitHashKey at '{prefix}explicitHashKey'. It must be in the range [0, 2^128-1]")
    return WireEntry(data, key, explicit, hash_key, size)


def parse_put_records(body: dict[str, Any], max_record_bytes: int, max_request_bytes: int) -> list[WireEntry]:
    """A PutRecords request's entries, checked as Kinesis checks them (count, each entry, total size)."""
    records = body.get("Records")
    if records is None:
        raise _invalid("records", None, "Member must not be null")
    if not isinstance(records, list):
        raise KinesisError("SerializationException", "'Records' is not a list")
    if not records:
        raise _invalid("records", "[]", "Member must have length greater than or equal to 1")
    if len(records) > MAX_RECORDS_PER_CALL:
        raise _invalid("records", f"[{len(records)} records]",
                       f"Member must have length less than or equal to {MAX_RECORDS_PER_CALL}")
    entries = [parse_entry(record, f"records.{n}.member.", max_record_bytes) for n, record in enumerate(records, 1)]
    total = sum(entry.size for entry in entries)
    if total > max_request_bytes:
        raise KinesisError("InvalidArgumentException",
                           f"Records size exceeds {max_request_bytes // (1024 * 1024)} MB limit ({total} bytes)")
    return entries


def shard_json(shard: ShardInfo) -> dict[str, Any]:
    """A shard as ListShards returns it."""
    sequence_range = {"StartingSequenceNumber": shard.starting_sequence}
    if shard.ending_sequence is not None:
        sequence_range["EndingSequenceNumber"] = shard.ending_sequence
    answer: dict[str, Any] = {
        "ShardId": shard.shard_id,
        "HashKeyRange": {"StartingHashKey": str(shard.start), "EndingHashKey": str(shard.end)},
        "SequenceNumberRange": sequence_range,
    }
    if shard.parent_id is not None:
        answer["ParentShardId"] = shard.parent_id
    if shard.adjacent_parent_id is not None:
        answer["AdjacentParentShardId"] = shard.adjacent_parent_id
    return answer


def _encode_token(query: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(query).encode()).decode()


def _decode_token(token: Any, stream: str) -> dict[str, Any]:
    try:
        query = json.loads(base64.urlsafe_b64decode(str(token).encode()))
    except (binascii.Error, ValueError):
        raise KinesisError("InvalidArgumentException", "Invalid NextToken.") from None
    if not isinstance(query, dict) or query.get("stream") != stream:
        raise KinesisError("InvalidArgumentException", "Invalid NextToken.")
    return query


def list_shards(body: dict[str, Any], stream: str, shards: Sequence[ShardInfo]) -> dict[str, Any]:
    """One ListShards page over ``shards`` (in creation order). The stream itself was checked by the caller
    unless the request carries a NextToken, which names the stream (and must go alone)."""
    token = body.get("NextToken")
    if token is not None:
        for name in _NOT_WITH_NEXT_TOKEN:
            if name in body:
                raise KinesisError("InvalidArgumentException", f"NextToken and {name} cannot be provided together.")
        query = _decode_token(token, stream)
    else:
        shard_filter = body.get("ShardFilter") or {}
        if not isinstance(shard_filter, dict):
            raise KinesisError("SerializationException", "'ShardFilter' is not an object")
        kind = shard_filter.get("Type")
        if shard_filter and kind not in _SHARD_FILTERS:
            raise _invalid("shardFilter.type", kind, f"Member must satisfy enum value set: {list(_SHARD_FILTERS)}")
        after = body.get("ExclusiveStartShardId")
        if kind == "AFTER_SHARD_ID":
            after = shard_filter.get("ShardId")
            if not after:
                raise KinesisError("InvalidArgumentException", "ShardId must be given with AFTER_SHARD_ID.")
        query = {"stream": stream, "filter": kind, "after": after}
    limit = body.get("MaxResults", LIST_SHARDS_DEFAULT_RESULTS)
    if not isinstance(limit, int) or not 1 <= limit <= LIST_SHARDS_MAX_RESULTS:
        raise _invalid("maxResults", limit, f"Member must be between 1 and {LIST_SHARDS_MAX_RESULTS}")
    after = query.get("after")
    # Shard ids are zero-padded, so string order is creation order; AT_LATEST lists only open shards.
    listed = [s for s in shards if (after is None or s.shard_id > after) and (query.get("filter") != "AT_LATEST" or s.is_open)]
    page = listed[:limit]
    answer: dict[str, Any] = {"Shards": [shard_json(s) for s in page]}
    if len(listed) > limit:
        answer["NextToken"] = _encode_token(query | {"after": page[-1].shard_id})
    return answer


def verbatim(answer: Reply | dict[str, Any]) -> Answer:
    """A raw scripted answer (tests.fakes.Reply or a body), sent as it is."""
    if isinstance(answer, dict):
        return Answer(payload=answer)
    if answer.drop_connection:
        return Answer(reset=True)
    if answer.error_code is not None:
        return Answer(answer.status, {"__type": answer.error_code, "message": answer.message})
    return Answer(answer.status, answer.body or {})


def looks_aggregated(data: bytes) -> bool:
    return data.startswith(KPL_MAGIC) and len(data) > len(KPL_MAGIC) + KPL_DIGEST_BYTES


def member_hash_keys(data: bytes) -> list[int]:
    """Each aggregate member's routing hash, read from the protobuf: its explicit hash key when it has one
    (the deaggregator reports table entry 0 for a member without an index), else MD5 of its partition key.
    [] when `data` is no valid aggregate."""
    body, digest = data[len(KPL_MAGIC):-KPL_DIGEST_BYTES], data[-KPL_DIGEST_BYTES:]
    if hashlib.md5(body, usedforsecurity=False).digest() != digest:
        return []
    aggregate = messages_pb2.AggregatedRecord()
    try:
        aggregate.ParseFromString(body)
        return [
            int(aggregate.explicit_hash_key_table[m.explicit_hash_key_index]) if m.HasField("explicit_hash_key_index")
            else hash_key_of(aggregate.partition_key_table[m.partition_key_index])
            for m in aggregate.records
        ]
    except (DecodeError, IndexError, ValueError):
        return []


def deaggregate(stored: StoredRecord) -> list[UserRecord]:
    """The user records in one stored record: itself when plain, its members (through aws_kinesis_agg's
    deaggregator, as the processor opens them) when a KPL aggregate."""
    if not looks_aggregated(stored.data):
        return [UserRecord(stored.data, stored.partition_key, stored.explicit_hash_key, stored.hash_key,
                           stored.shard_id, stored.sequence_number, None, stored.arrival, stored.stored_at)]
    wrapped = {"kinesis": {"kinesisSchemaVersion": "1.0", "sequenceNumber": stored.sequence_number,
                           "approximateArrivalTimestamp": 0.0, "partitionKey": stored.partition_key,
                           "data": base64.b64encode(stored.data).decode()}}
    hash_keys = member_hash_keys(stored.data)
    users: list[UserRecord] = []
    for index, member in enumerate(iter_deaggregate_records([wrapped])):
        body = member["kinesis"]
        if not body.get("aggregated", False):  # magic bytes but no valid aggregate: the record as it is
            return [UserRecord(stored.data, stored.partition_key, stored.explicit_hash_key, stored.hash_key,
                               stored.shard_id, stored.sequence_number, None, stored.arrival, stored.stored_at)]
        own_hash = hash_keys[index] if index < len(hash_keys) else stored.hash_key
        users.append(UserRecord(base64.b64decode(body["data"]), body["partitionKey"], body.get("explicitHashKey"),
                                own_hash, stored.shard_id, stored.sequence_number, index, stored.arrival, stored.stored_at))
    return users
