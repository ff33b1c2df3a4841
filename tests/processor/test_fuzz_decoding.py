"""Properties of the processor's per-record path: any Kinesis payload ends as items or a failure with a reason.

The path is the one handler.prepare runs for each Kinesis record: user_records (base64, KPL aggregates),
then per user record parse_json, map_event and build_item. Only PermanentFailure may leave it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from aws_kinesis_agg import deaggregator
from aws_kinesis_agg.aggregator import RecordAggregator
from hypothesis import given, settings
from hypothesis import strategies as st

from processor import errors
from processor.decoding import KPL_MAGIC, parse_json, user_records
from processor.errors import PermanentFailure
from processor.items import build_item
from processor.mappings import GenericPaths, map_event
from tests.processor.conftest import ARRIVAL, kinesis_record

AGGREGATED_RECORD = deaggregator.messages_pb2.AggregatedRecord
ARRIVED = datetime.fromtimestamp(ARRIVAL, UTC)
REASONS = {value for name, value in vars(errors).items() if name.isupper() and isinstance(value, str)} - {
    errors.PROCESSING_ERROR  # the handler's last resort for a bug: the payloads here must never need it
}


def outcomes(raw: dict[str, Any], generic: GenericPaths | None = None) -> list[Any]:
    """What handler.prepare makes of one Kinesis record: an item or a PermanentFailure per user record.

    Any other exception propagates and fails the property.
    """
    try:
        users = user_records(raw)
    except PermanentFailure as failure:
        return [failure]
    results: list[Any] = []
    for user in users:
        try:
            post = map_event(parse_json(user), generic or GenericPaths())
            results.append(build_item(post, user.arrival or ARRIVED, "ExpiresAt", 30))
        except PermanentFailure as failure:
            results.append(failure)
    return results


def check(outcome: list[Any]) -> None:
    for result in outcome:
        if isinstance(result, PermanentFailure):
            assert result.reason in REASONS
            assert result.detail and result.detail.encode("utf-8")
        else:
            assert isinstance(result, dict) and {"Username", "Id", "Message"} <= result.keys()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_payload_bytes_end_as_items_or_failures(data: bytes) -> None:
    """Any bytes in a Kinesis record: one outcome per user record, nothing but PermanentFailure raised."""
    check(outcomes(kinesis_record(data)))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_base64_text_ends_as_items_or_failures(encoded: str) -> None:
    """Whatever kinesis.data holds (not base64, padding errors, non-ASCII): items or invalid_base64."""
    check(outcomes(kinesis_record(b"", raw_base64=encoded)))


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.lists(st.integers()), st.dictionaries(st.text(), st.text())))
def test_kinesis_data_of_any_type_is_invalid_base64(value: Any) -> None:
    """A Kinesis record whose data is not a string at all is one invalid_base64 failure."""
    record = kinesis_record(b"")
    record["kinesis"]["data"] = value
    [failure] = outcomes(record)
    assert isinstance(failure, PermanentFailure) and failure.reason == "invalid_base64"


def with_checksum(body: bytes) -> bytes:
    return KPL_MAGIC + body + hashlib.md5(body).digest()  # noqa: S324 - KPL's checksum


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_behind_the_kpl_magic_with_a_valid_checksum_fails_cleanly(body: bytes) -> None:
    """KPL magic + any protobuf bytes + a matching MD5: user records, or one invalid_aggregate failure."""
    check(outcomes(kinesis_record(with_checksum(body))))


@st.composite
def aggregates(draw: st.DrawFn) -> bytes:
    """Well-formed protobuf, but with indexes out of range, empty tables and any payload bytes."""
    message = AGGREGATED_RECORD()
    message.partition_key_table.extend(draw(st.lists(st.text(max_size=5), max_size=3)))
    message.explicit_hash_key_table.extend(draw(st.lists(st.text(alphabet="0123456789", max_size=5), max_size=2)))
    for _ in range(draw(st.integers(0, 4))):
        record = message.records.add()
        record.partition_key_index = draw(st.integers(0, 4))
        if draw(st.booleans()):
            record.explicit_hash_key_index = draw(st.integers(0, 3))
        record.data = draw(st.binary(max_size=40) | st.sampled_from([b'{"data": {"id": "1", "text": "t", "author_id": "2"}}']))
    return with_checksum(message.SerializeToString())


@settings(max_examples=300, deadline=None)
@given(aggregates())
def test_aggregates_with_bad_indexes_fail_as_a_whole_or_yield_every_record(data: bytes) -> None:
    """An aggregate either yields exactly its user records, byte for byte, or fails as one invalid_aggregate."""
    record = kinesis_record(data)
    message = AGGREGATED_RECORD()
    message.ParseFromString(data[len(KPL_MAGIC) : -16])
    try:
        users = user_records(record)
    except PermanentFailure as failure:
        assert failure.reason == "invalid_aggregate"
        return
    assert [u.data for u in users] == [r.data for r in message.records]
    assert [u.partition_key for u in users] == [message.partition_key_table[r.partition_key_index] for r in message.records]
    check(outcomes(record))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=50), min_size=1, max_size=5))
def test_kpl_aggregates_come_out_byte_for_byte(payloads: list[bytes]) -> None:
    """An aggregate the KPL format library built yields each payload unchanged, in order, with its key."""
    aggregator = RecordAggregator()
    for index, payload in enumerate(payloads):
        aggregator.add_user_record(f"pk{index}", payload)
    data = bytes(aggregator.clear_and_get().get_contents()[2])
    users = user_records(kinesis_record(data))
    assert [(u.data, u.partition_key, u.sub_sequence_number) for u in users] == [(p, f"pk{i}", i) for i, p in enumerate(payloads)]


def test_a_plain_record_comes_out_byte_for_byte() -> None:
    """A non-aggregated payload is the user record's data, unchanged, whatever its bytes."""
    for data in (b"", b"\x00\xff", KPL_MAGIC[:3], b"x" + KPL_MAGIC, json.dumps({"a": "é"}).encode()):
        [user] = user_records(kinesis_record(data))
        assert user.data == data


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=5), st.floats(), st.integers(), st.booleans()))
def test_odd_arrival_timestamps_and_event_ids_never_raise(value: Any) -> None:
    """Metadata of any type (arrival time NaN or 1e300, eventID a number) gives a user record, not an exception."""
    record = kinesis_record(b"{}")
    record["kinesis"]["approximateArrivalTimestamp"] = value
    record["eventID"] = value
    record["kinesis"]["sequenceNumber"] = value
    [user] = user_records(record)
    assert user.arrival is None or (isinstance(user.arrival, datetime) and user.arrival.tzinfo == UTC)
    check(outcomes(record))
