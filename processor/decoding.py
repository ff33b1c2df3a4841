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
from typing import Any

import aws_kinesis_agg

# The deaggregator must be imported before messages_pb2: it puts the package's own folder on sys.path,
# which messages_pb2's `import config_pb2` relies on.
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


def shard_id_of(raw: dict[str, Any]) -> str:
    """The shard from the event's eventID (`shardId-000000000000:<sequence number>`)."""
    event_id = str(raw.get("eventID", ""))
    shard, sep, _ = event_id.partition(":")
    return shard if sep and shard else "unknown-shard"


def _arrival(kinesis: dict[str, Any]) -> datetime | None:
    value = kinesis.get("approximateArrivalTimestamp")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    return None


def envelope(
    raw: dict[str, Any], data: bytes, sub_sequence_number: int | None = None, partition_key: str | None = None
) -> UserRecord:
    kinesis = raw.get("kinesis") or {}
    return UserRecord(
        shard_id=shard_id_of(raw),
        sequence_number=str(kinesis.get("sequenceNumber", "")),
        sub_sequence_number=sub_sequence_number,
        partition_key=partition_key if partition_key is not None else str(kinesis.get("partitionKey", "")),
        arrival=_arrival(kinesis),
        event_source_arn=str(raw.get("eventSourceARN", "")),
        data=data,
    )


def _expected_user_records(data: bytes) -> int:
    """How many user records an aggregate holds; raises PermanentFailure when it is not a valid aggregate."""
    body, digest = data[len(KPL_MAGIC) : -KPL_DIGEST_BYTES], data[-KPL_DIGEST_BYTES:]
    if len(data) <= len(KPL_MAGIC) + KPL_DIGEST_BYTES or hashlib.md5(body).digest() != digest:  # noqa: S324 - KPL's checksum
        raise PermanentFailure(INVALID_AGGREGATE, "KPL magic bytes present but the MD5 checksum does not match")
    aggregate = deaggregator.messages_pb2.AggregatedRecord()
    try:
        aggregate.ParseFromString(body)
    except DecodeError as exc:
        raise PermanentFailure(INVALID_AGGREGATE, f"KPL aggregate protobuf does not parse ({exc})") from None
    if not aggregate.records:
        raise PermanentFailure(INVALID_AGGREGATE, "KPL aggregate holds no user records")
    return len(aggregate.records)


def user_records(raw: dict[str, Any]) -> list[UserRecord]:
    """The user records in one Lambda Kinesis record: itself, or each record of a KPL aggregate.

    Raises PermanentFailure (invalid_base64, invalid_aggregate) for the whole Kinesis record.
    """
    encoded = (raw.get("kinesis") or {}).get("data")
    if not isinstance(encoded, str):
        raise PermanentFailure(INVALID_BASE64, "kinesis.data is missing or not a string")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PermanentFailure(INVALID_BASE64, f"kinesis.data is not valid base64 ({exc})") from None
    if not data.startswith(KPL_MAGIC):
        return [envelope(raw, data)]
    expected = _expected_user_records(data)
    # The library skips (and only prints) user records it cannot build, so the count is checked here.
    found = [
        envelope(raw, base64.b64decode(r["kinesis"]["data"]), r["kinesis"]["subSequenceNumber"], r["kinesis"]["partitionKey"])
        for r in deaggregator.iter_deaggregate_records([raw])
        if r["kinesis"].get("aggregated")
    ]
    if len(found) != expected:
        raise PermanentFailure(INVALID_AGGREGATE, f"only {len(found)} of {expected} user records could be extracted")
    return found


def parse_json(record: UserRecord) -> Any:
    """The record's JSON value; raises PermanentFailure(invalid_utf8 | invalid_json) with the position."""
    try:
        text = record.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PermanentFailure(
            INVALID_UTF8, f"byte {exc.start} ({exc.object[exc.start : exc.start + 1]!r}): {exc.reason}"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PermanentFailure(INVALID_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PermanentFailure(INVALID_JSON, "nesting too deep") from None
