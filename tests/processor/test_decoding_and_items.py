"""Decoding (base64, KPL aggregates, UTF-8, JSON) and item building (limits, determinism, formats)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from processor.decoding import KPL_MAGIC, parse_json, user_records
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


def aggregate_message(keys: list[str | bytes], records: list[tuple[int, bytes]]) -> bytes:
    """A KPL aggregate with a valid checksum around any protobuf content (what a buggy producer could send)."""
    from aws_kinesis_agg import deaggregator

    message = deaggregator.messages_pb2.AggregatedRecord()
    for key in keys:  # bytes that are not UTF-8 go in through the wire format, which protobuf does not check
        message.MergeFromString(b"\x0a" + bytes([len(key)]) + (key if isinstance(key, bytes) else key.encode()))
    for index, data in records:
        message.records.add(partition_key_index=index, data=data)
    body = message.SerializeToString()
    return KPL_MAGIC + body + hashlib.md5(body).digest()  # noqa: S324 - KPL's checksum


def test_aggregate_naming_a_missing_partition_key_is_invalid() -> None:
    """A user record pointing past the key table made aws_kinesis_agg raise IndexError; now invalid_aggregate."""
    with pytest.raises(PermanentFailure) as caught:
        user_records(kinesis_record(aggregate_message(["pk0"], [(0, b"{}"), (3, b"{}")])))
    assert caught.value.reason == "invalid_aggregate" and "partition key 3" in caught.value.detail


def test_aggregate_with_a_partition_key_that_is_not_utf8_is_invalid() -> None:
    """protobuf hands back bytes for a non-UTF-8 key; that is refused rather than carried as a non-string."""
    with pytest.raises(PermanentFailure) as caught:
        user_records(kinesis_record(aggregate_message([b"\xff\xfe"], [(0, b"{}")])))
    assert caught.value.reason == "invalid_aggregate"


def test_aggregate_records_missing_required_fields_are_invalid() -> None:
    """A user record without its data (a required protobuf field) is not read as an empty payload."""
    body = b"\x0a\x02pk" + b"\x1a\x02\x08\x00"  # key table ["pk"], one record with only its key index
    with pytest.raises(PermanentFailure) as caught:
        user_records(kinesis_record(KPL_MAGIC + body + hashlib.md5(body).digest()))  # noqa: S324
    assert caught.value.reason == "invalid_aggregate"


def test_huge_integers_and_nan_in_payloads_are_invalid_json() -> None:
    """A 5,000-digit number raised ValueError out of parse_json and NaN was accepted; both are invalid_json."""
    for data in (b'{"id": ' + b"1" * 5000 + b"}", b'{"t": NaN}', b"-Infinity"):
        [user] = user_records(kinesis_record(data))
        with pytest.raises(PermanentFailure) as caught:
            parse_json(user)
        assert caught.value.reason == "invalid_json"


def test_arrival_time_nobody_can_represent_gives_no_arrival() -> None:
    """An approximateArrivalTimestamp of NaN or 1e300 raised ValueError/OverflowError; now it is left unset."""
    for value in (float("nan"), 1e300, -1e300):
        record = kinesis_record(b"{}")
        record["kinesis"]["approximateArrivalTimestamp"] = value
        [user] = user_records(record)
        assert user.arrival is None


def test_failure_details_are_always_encodable() -> None:
    """Details quoting payload text with lone surrogates are escaped, so logs and dead letters can write them."""
    failure = PermanentFailure("unmappable", "by did:\ud800")
    assert failure.detail == "by did:\\ud800" and str(failure).encode("utf-8")
