"""Decoding (base64, KPL aggregates, UTF-8, JSON) and item building (limits, determinism, formats)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from processor.decoding import parse_json, user_records
from processor.errors import PermanentFailure
from processor.items import MAX_ITEM_BYTES, MAX_PARTITION_KEY_BYTES, build_item, format_time, item_size
from processor.mappings import Post
from tests.processor.conftest import ARRIVAL, SHARD, kinesis_record

ARRIVED = datetime.fromtimestamp(ARRIVAL, UTC)


def post(**changes: object) -> Post:
    fields: dict[str, object] = {"source": "generic", "username": "u", "id": "1", "message": "m", "timestamp": None}
    return Post(**(fields | changes))  # type: ignore[arg-type]


def aggregate(*payloads: bytes) -> bytes:
    aggregator = RecordAggregator()
    for i, payload in enumerate(payloads):
        aggregator.add_user_record(f"pk{i}", payload)
    return bytes(aggregator.clear_and_get().get_contents()[2])


def test_plain_record_is_one_user_record_with_its_metadata() -> None:
    """A non-aggregated record keeps its shard (from eventID), sequence number and arrival time."""
    record = kinesis_record(b'{"a": 1}', partition_key="k")
    [user] = user_records(record)
    assert (user.shard_id, user.sequence_number, user.sub_sequence_number, user.partition_key) == (
        SHARD,
        record["kinesis"]["sequenceNumber"],
        None,
        "k",
    )
    assert (user.arrival, user.data) == (ARRIVED, b'{"a": 1}')


def test_aggregate_yields_each_user_record_in_order() -> None:
    """A KPL aggregate yields its user records with their own partition keys and sub-sequence numbers."""
    users = user_records(kinesis_record(aggregate(b"one", "два".encode(), b"three")))
    assert [(u.sub_sequence_number, u.partition_key, u.data) for u in users] == [
        (0, "pk0", b"one"),
        (1, "pk1", "два".encode()),
        (2, "pk2", b"three"),
    ]


def test_aggregate_with_a_bad_checksum_is_invalid() -> None:
    """Flipping one byte of an aggregate breaks its MD5: the whole record is an invalid aggregate."""
    data = bytearray(aggregate(b"one", b"two"))
    data[10] ^= 0xFF
    with pytest.raises(PermanentFailure) as caught:
        user_records(kinesis_record(bytes(data)))
    assert caught.value.reason == "invalid_aggregate"


def test_base64_is_decoded_strictly() -> None:
    """Characters outside the base64 alphabet are refused, not skipped."""
    with pytest.raises(PermanentFailure) as caught:
        user_records(kinesis_record(b"", raw_base64=base64.b64encode(b"{}").decode() + "*"))
    assert caught.value.reason == "invalid_base64"


def test_utf8_is_decoded_strictly_and_errors_name_the_byte() -> None:
    """Latin-1 bytes are invalid UTF-8; the detail gives the offset (nothing is replaced or guessed)."""
    [user] = user_records(kinesis_record('{"t": "café"}'.encode("latin-1")))
    with pytest.raises(PermanentFailure) as caught:
        parse_json(user)
    assert caught.value.reason == "invalid_utf8"
    assert "byte 10 (b'\\xe9')" in caught.value.detail


def test_json_with_non_ascii_text_parses() -> None:
    """UTF-8 JSON in any script parses to the same text (the original sample decoded as ASCII)."""
    text = "Привет 👋 مرحبا"
    [user] = user_records(kinesis_record({"t": text}))
    assert parse_json(user) == {"t": text}


def test_item_is_deterministic_and_times_are_utc_with_z() -> None:
    """The same post and arrival give the same item; times are ISO 8601 UTC ending in Z."""
    when = datetime.fromisoformat("2026-01-01T14:00:00.5+02:00")
    first = build_item(post(timestamp=when, hashtags=("a",)), ARRIVED, "ExpiresAt", 0)
    assert first == build_item(post(timestamp=when, hashtags=("a",)), ARRIVED, "ExpiresAt", 0)
    assert first["Timestamp"] == {"S": "2026-01-01T12:00:00.500Z"}
    assert first["IngestedAt"] == {"S": format_time(ARRIVED)} == {"S": "2026-01-01T12:00:00.123Z"}
    assert "ExpiresAt" not in first and "Lang" not in first and "AuthorId" not in first


def test_item_without_a_post_time_uses_the_arrival_time() -> None:
    """A payload with no time of its own is stamped with the record's arrival time."""
    assert build_item(post(), ARRIVED, None, 0)["Timestamp"] == {"S": "2026-01-01T12:00:00.123Z"}


def test_lone_surrogate_text_is_a_permanent_failure() -> None:
    """JSON escapes can produce unpaired surrogates; DynamoDB cannot store them, so the record is dead-lettered."""
    broken = json.loads('"bad \\ud800 text"')
    with pytest.raises(PermanentFailure) as caught:
        build_item(post(message=broken), ARRIVED, None, 0)
    assert caught.value.reason == "invalid_text"


def test_oversized_key_is_a_permanent_failure() -> None:
    """A Username over DynamoDB's partition key limit is refused before any write."""
    with pytest.raises(PermanentFailure) as caught:
        build_item(post(username="ж" * MAX_PARTITION_KEY_BYTES), ARRIVED, None, 0)
    assert caught.value.reason == "key_too_large"


def test_item_size_counts_utf8_bytes_and_the_limit_is_exact() -> None:
    """Sizes count UTF-8 bytes of names and values; an item of exactly 400 KB passes, one byte more fails."""
    base = build_item(post(message=""), ARRIVED, None, 0)
    room = MAX_ITEM_BYTES - item_size(base)
    assert item_size(build_item(post(message="x" * room), ARRIVED, None, 0)) == MAX_ITEM_BYTES
    with pytest.raises(PermanentFailure) as caught:
        build_item(post(message="x" * (room + 1)), ARRIVED, None, 0)
    assert caught.value.reason == "item_too_large"
    assert item_size(build_item(post(message="é"), ARRIVED, None, 0)) == item_size(base) + 2
