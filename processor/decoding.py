"""Kinesis records to user records (KPL aggregates split with aws-kinesis-agg) and user records to JSON.

Decoding is strict on purpose: base64 with validation, then UTF-8 (never ASCII, never "replace"), then
JSON. Whatever fails is a permanent failure with a reason naming the step and the position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import aws_kinesis_agg

# The deaggregator must be imported before messages_pb2: it puts the package's own folder on sys.path,
# which messages_pb2's `import config_pb2` relies on. Only its protobuf message class is used.
from aws_kinesis_agg import deaggregator
from google.protobuf.message import DecodeError

from processor.errors import INVALID_AGGREGATE, INVALID_BASE64, INVALID_JSON, INVALID_UTF8, PermanentFailure

KPL_MAGIC = aws_kinesis_agg.MAGIC  # F3 89 9A C2
KPL_DIGEST_BYTES = aws_kinesis_agg.DIGEST_SIZE  # trailing MD5 of the protobuf message


@dataclass(frozen=True)
class UserRecord:
    """One payload to store, with where it came from (for logs, dead letters and batch item failures)."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int | None  # position inside a KPL aggregate; None for a plain record
    partition_key: str
    arrival: datetime | None  # the stream's approximateArrivalTimestamp
    event_source_arn: str
    data: bytes

    @property
    def where(self) -> str:
        sub = f"/{self.sub_sequence_number}" if self.sub_sequence_number is not None else ""
        return f"{self.shard_id}/{self.sequence_number}{sub}"


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def shard_id_of(raw: dict[str, Any]) -> str:
    """The shard from the event's eventID (`shardId-000000000000:<sequence number>`)."""
    event_id = raw.get("eventID")
    shard, sep, _ = event_id.partition(":") if isinstance(event_id, str) else ("", "", "")
    return shard if sep and shard else "unknown-shard"


def _arrival(kinesis: dict[str, Any]) -> datetime | None:
    value = kinesis.get("approximateArrivalTimestamp")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (ValueError, OverflowError, OSError):  # NaN, or beyond the years datetime can hold
            return None
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def envelope(
    raw: dict[str, Any], data: bytes, sub_sequence_number: int | None = None, partition_key: str | None = None
) -> UserRecord:
    """The user record for `data`, with the Kinesis record's metadata. Never raises, whatever `raw` holds."""
    kinesis = _as_dict(raw.get("kinesis"))
    return UserRecord(
        shard_id=shard_id_of(raw),
        sequence_number=_text(kinesis.get("sequenceNumber")),
        sub_sequence_number=sub_sequence_number,
        partition_key=partition_key if partition_key is not None else _text(kinesis.get("partitionKey")),
        arrival=_arrival(kinesis),
        event_source_arn=_text(raw.get("eventSourceARN")),
        data=data,
    )


def _invalid_aggregate(detail: str) -> PermanentFailure:
    return PermanentFailure(INVALID_AGGREGATE, f"KPL aggregate {detail}")


def _aggregated(data: bytes) -> list[tuple[str, bytes]]:
    """The (partition key, data) of each user record in a KPL aggregate; raises PermanentFailure otherwise.

    The protobuf is read here rather than through aws_kinesis_agg's iterator: that one prints and skips user
    records it cannot build, and raises IndexError from its own error report on an out-of-range key index.
    """
    body, digest = data[len(KPL_MAGIC) : -KPL_DIGEST_BYTES], data[-KPL_DIGEST_BYTES:]
    if len(data) <= len(KPL_MAGIC) + KPL_DIGEST_BYTES or hashlib.md5(body).digest() != digest:  # noqa: S324 - KPL's checksum
        raise _invalid_aggregate("magic bytes present but the MD5 checksum does not match")
    aggregate = deaggregator.messages_pb2.AggregatedRecord()
    try:
        aggregate.ParseFromString(body)
    except DecodeError as exc:
        raise _invalid_aggregate(f"protobuf does not parse ({exc})") from None
    if not aggregate.IsInitialized():
        raise _invalid_aggregate("protobuf lacks required fields (a user record without its key index or data)")
    if not aggregate.records:
        raise _invalid_aggregate("holds no user records")
    keys = list(aggregate.partition_key_table)
    found: list[tuple[str, bytes]] = []
    for position, user in enumerate(aggregate.records):
        index = user.partition_key_index
        if index >= len(keys):
            raise _invalid_aggregate(f"user record {position} names partition key {index} of a table of {len(keys)}")
        key = keys[index]
        if not isinstance(key, str):  # protobuf hands back bytes for a string field that is not UTF-8
            raise _invalid_aggregate(f"partition key {index} is not UTF-8 text")
        found.append((key, user.data))
    return found


def user_records(raw: dict[str, Any]) -> list[UserRecord]:
    """The user records in one Lambda Kinesis record: itself, or each record of a KPL aggregate.

    Raises PermanentFailure (invalid_base64, invalid_aggregate) for the whole Kinesis record, and nothing
    else: an exception escaping here would fail the record on every retry and stall its shard.
    """
    encoded = _as_dict(raw.get("kinesis")).get("data")
    if not isinstance(encoded, str):
        raise PermanentFailure(INVALID_BASE64, "kinesis.data is missing or not a string")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PermanentFailure(INVALID_BASE64, f"kinesis.data is not valid base64 ({exc})") from None
    if not data.startswith(KPL_MAGIC):
        return [envelope(raw, data)]
    try:
        aggregated = _aggregated(data)
    except PermanentFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - protobuf surprises are the aggregate's fault, not a reason to stall
        raise _invalid_aggregate(f"cannot be read ({type(exc).__name__}: {exc})") from None
    return [envelope(raw, payload, position, key) for position, (key, payload) in enumerate(aggregated)]


class _NotJsonConstant(ValueError):
    pass


def _refuse_constant(name: str) -> NoReturn:
    raise _NotJsonConstant(name)


# Shared, so that parse_constant does not build a decoder per call; it runs only for NaN and Infinity.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def parse_json(record: UserRecord) -> Any:
    """The record's JSON value; raises PermanentFailure(invalid_utf8 | invalid_json) naming the position.

    Never raises anything else: NaN and Infinity (not JSON), integers over Python's digit limit, nesting
    beyond the recursion limit and any other decoder error are invalid_json with what went wrong.
    """
    try:
        text = record.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentFailure(
            INVALID_UTF8, f"byte {exc.start} ({exc.object[exc.start : exc.start + 1]!r}): {exc.reason}"
        ) from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise PermanentFailure(INVALID_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PermanentFailure(INVALID_JSON, "nesting too deep") from None
    except _NotJsonConstant as exc:
        raise PermanentFailure(INVALID_JSON, f"{exc} is not a JSON value (RFC 8259 has no NaN or Infinity)") from None
    except Exception as exc:  # noqa: BLE001 - e.g. ValueError for a 5,000-digit integer, MemoryError
        raise PermanentFailure(INVALID_JSON, f"{type(exc).__name__}: {exc}") from None
