"""Kinesis sink entries (partition key, size, rejection, limits) and a plain write through a real HTTP endpoint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from sinks.base import Record, RecordRejected
from sinks.kinesis import KinesisSink, KinesisSinkConfig
from sinks.kinesis.records import MAX_PARTITION_KEY_CHARS, REASON_INVALID_DATA, REASON_RECORD_TOO_LARGE, EntryBuilder
from tests.sinks.conftest import RecordingEvents, ScriptedKinesis, assert_accounted, deliver, tweet_record

DEFAULT_PATHS = ["data.author_id", "user.id_str", "author_id"]
# The per-request events (the engine adds its own: in flight, settled, shard map).
REQUEST_EVENTS = frozenset({"put_requested", "put_failed", "records_retried", "sink_health"})


def record_of(event: Any, data: bytes | None = None) -> Record:
    """A record whose bytes are `data`, or the UTF-8 JSON of `event`."""
    raw = data if data is not None else json.dumps(event, ensure_ascii=False).encode("utf-8")
    return Record(raw, event, "test", "test:1")


@pytest.fixture
def builder() -> EntryBuilder:
    """An entry builder with the default key paths and a 1 KiB record limit."""
    return EntryBuilder(DEFAULT_PATHS, max_record_bytes=1024)


# --- partition keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "key"),
    [
        ({"data": {"author_id": "2244994945", "text": "v2"}}, "2244994945"),
        ({"user": {"id_str": "783214", "screen_name": "X"}, "text": "v1.1"}, "783214"),
        ({"author_id": "12"}, "12"),
        ({"data": {"author_id": "first"}, "user": {"id_str": "second"}, "author_id": "third"}, "first"),
        ({"data": {"author_id": ""}, "user": {"id_str": "next"}}, "next"),
        ({"data": {"author_id": None}, "author_id": "last"}, "last"),
        ({"data": "not an object", "author_id": "last"}, "last"),
    ],
    ids=["v2", "v1.1", "top-level", "first-path-wins", "empty-skipped", "null-skipped", "non-object-skipped"],
)
def test_partition_key_is_the_first_path_that_resolves(builder: EntryBuilder, event: Any, key: str) -> None:
    """Paths are tried in order; the first non-empty value is the key."""
    assert builder.build(record_of(event)).partition_key == key


@pytest.mark.parametrize(("value", "key"), [(2244994945, "2244994945"), (0, "0"), (-7, "-7"), (2**70, str(2**70))])
def test_integer_ids_are_stringified(builder: EntryBuilder, value: int, key: str) -> None:
    """Numeric ids (as some sources emit them) become their decimal string, zero included."""
    assert builder.build(record_of({"data": {"author_id": value}})).partition_key == key


@pytest.mark.parametrize(
    "event",
    [
        {"data": {"author_id": True}},
        {"data": {"author_id": 1.5}},
        {"data": {"author_id": {"id": "1"}}},
        {"data": {"author_id": ["1"]}},
        {"text": "no author anywhere"},
        ["a", "list"],
        None,
    ],
    ids=["bool", "float", "object", "list", "missing", "event-is-list", "event-is-none"],
)
def test_fallback_key_is_the_md5_of_the_data(builder: EntryBuilder, event: Any) -> None:
    """Without a usable id the key is the hex MD5 of the record's bytes: the same for the same record."""
    record = record_of(event, data=b'{"opaque": "\xe2\x9c\xa8"}')
    entry = builder.build(record)
    assert entry.partition_key == hashlib.md5(record.data, usedforsecurity=False).hexdigest()
    assert builder.build(record_of(event, data=record.data)).partition_key == entry.partition_key
    assert builder.build(record_of(event, data=record.data + b" ")).partition_key != entry.partition_key


def test_custom_paths_replace_the_defaults() -> None:
    """Configured paths are the only ones tried; nested paths of any depth resolve."""
    custom = EntryBuilder(["meta.origin.account"], max_record_bytes=1024)
    assert custom.build(record_of({"meta": {"origin": {"account": "acct-9"}}, "author_id": "x"})).partition_key == "acct-9"
    fallback = custom.build(record_of({"author_id": "ignored"}))
    assert len(fallback.partition_key) == 32 and fallback.partition_key != "ignored"


@pytest.mark.parametrize("char", ["a", "é", "中", "😀"], ids=["ascii", "latin1", "cjk", "emoji"])
def test_long_keys_are_replaced_by_the_sha256_of_the_whole_key(char: str) -> None:
    """A key over 256 characters becomes the SHA-256 hex of the full key: never cut, never refused by Kinesis."""
    builder = EntryBuilder(DEFAULT_PATHS, max_record_bytes=4096)
    key = char * 300
    entry = builder.build(record_of({"author_id": key}, data=b"x"))
    assert entry.partition_key == hashlib.sha256(key.encode("utf-8")).hexdigest()
    assert len(entry.partition_key) == 64
    assert entry.size == 1 + 64


def test_long_keys_sharing_a_prefix_stay_distinct_and_stable(builder: EntryBuilder) -> None:
    """Keys equal in their first 256 characters map to different keys (truncation would merge them); the same
    key always maps to the same key, so to the same shard."""
    prefix = "p" * MAX_PARTITION_KEY_CHARS
    keys = [builder.build(record_of({"author_id": prefix + suffix})).partition_key for suffix in ("a", "b", "c", "a")]
    assert len(set(keys[:3])) == 3
    assert keys[0] == keys[3]
    assert all(len(k) <= MAX_PARTITION_KEY_CHARS for k in keys)


def test_a_key_of_exactly_256_characters_is_kept(builder: EntryBuilder) -> None:
    """The limit itself is valid: 256 characters pass unchanged."""
    key = "k" * MAX_PARTITION_KEY_CHARS
    assert builder.build(record_of({"author_id": key})).partition_key == key


def test_a_key_within_256_code_points_but_over_256_utf16_units_is_hashed(builder: EntryBuilder) -> None:
    """200 emoji are 200 code points but 400 UTF-16 units: hashed, whichever way Kinesis counts characters."""
    key = "😀" * 200
    assert builder.build(record_of({"author_id": key})).partition_key == hashlib.sha256(key.encode()).hexdigest()


def test_a_key_that_is_not_valid_utf8_is_hashed_not_raised(builder: EntryBuilder) -> None:
    """A lone surrogate (which JSON can carry) cannot be sent: its key is hashed instead of crashing prepare."""
    entry = builder.build(record_of({"author_id": "a\ud800b"}, data=b"x"))
    assert len(entry.partition_key) == 64 and entry.partition_key.isascii()


# --- sizes and rejection ----------------------------------------------------------------------------


def test_size_counts_data_and_key_in_utf8_bytes(builder: EntryBuilder) -> None:
    """size = raw data bytes + UTF-8 bytes of the key (what Kinesis counts, before base64)."""
    record = tweet_record("Привет мир ✨ 你好 🎉", author_id="作者😀")
    entry = builder.build(record)
    assert entry.record is record
    assert entry.size == len(record.data) + len("作者😀".encode()) == len(record.data) + 10


def test_a_record_at_the_limit_is_accepted_and_one_byte_more_rejected() -> None:
    """data + key == max_record_bytes passes; one more byte raises RecordRejected(record_too_large)."""
    builder = EntryBuilder(["author_id"], max_record_bytes=1024)
    key = "ключ"  # 8 bytes in UTF-8: the key counts in bytes, not characters
    fits = builder.build(record_of({"author_id": key}, data=b"d" * (1024 - 8)))
    assert fits.size == 1024
    with pytest.raises(RecordRejected) as raised:
        builder.build(record_of({"author_id": key}, data=b"d" * (1024 - 7)))
    assert raised.value.reason == REASON_RECORD_TOO_LARGE
    assert "1025 bytes" in raised.value.detail and "1024" in raised.value.detail


def test_an_integer_too_long_to_print_is_no_key(builder: EntryBuilder) -> None:
    """An id of more digits than Python converts (ValueError in str()) is skipped like a float: fallback key."""
    record = record_of({"author_id": 10**5000}, data=b"huge")
    assert builder.build(record).partition_key == hashlib.md5(b"huge", usedforsecurity=False).hexdigest()


def test_data_that_is_not_bytes_is_rejected_with_a_reason(builder: EntryBuilder) -> None:
    """A source handing over text instead of bytes gets RecordRejected(invalid_data), not a failed request."""
    with pytest.raises(RecordRejected) as raised:
        builder.build(Record("text", {"author_id": "1"}, "test", "test:1"))  # type: ignore[arg-type]
    assert raised.value.reason == REASON_INVALID_DATA and "str" in raised.value.detail


def test_the_key_alone_can_push_a_record_over_the_limit() -> None:
    """Data under the limit is still rejected when data + key exceed it."""
    builder = EntryBuilder(["author_id"], max_record_bytes=1024)
    with pytest.raises(RecordRejected, match=REASON_RECORD_TOO_LARGE):
        builder.build(record_of({"author_id": "😀" * 10}, data=b"d" * 1000))


def test_sink_prepare_applies_configured_limit_and_paths(make_sink: Callable[..., KinesisSink]) -> None:
    """KinesisSink.prepare uses the config's max_record_bytes and partition_key paths."""
    sink = make_sink("http://127.0.0.1:9", partition_key=["user.id_str"], max_record_bytes=2048)
    assert sink.prepare(record_of({"user": {"id_str": "77"}})).partition_key == "77"
    with pytest.raises(RecordRejected, match=REASON_RECORD_TOO_LARGE):
        sink.prepare(record_of({"user": {"id_str": "77"}}, data=b"z" * 2047))


# --- a plain write --------------------------------------------------------------------------------------


def test_write_sends_every_entry_in_one_request(
    kinesis_fake: Callable[..., ScriptedKinesis],
    make_sink: Callable[..., KinesisSink],
    make_records: Callable[..., list[Record]],
    events: RecordingEvents,
) -> None:
    """One PutRecords carries the stream name and each entry's exact bytes and key; all are sent."""
    fake = kinesis_fake()
    sink = make_sink(fake.server.endpoint_url)
    batch = [sink.prepare(r) for r in make_records(4, text="héllo ✨ мир")]
    result = deliver(sink, batch)
    assert_accounted(batch, result)
    assert result.sent == batch and not result.failed and not result.unsent
    [body] = fake.server.operations("PutRecords")
    assert body["StreamName"] == "tweets-under-test"
    assert fake.requests() == [[(e.record.data, e.partition_key) for e in batch]]
    [requested] = events.named("put_requested")
    assert (requested["result"], requested["records"], requested["accepted"]) == ("success", 4, 4)
    assert requested["latency_s"] >= 0
    assert [name for name, _ in events.calls if name in REQUEST_EVENTS] == ["put_requested"]
    assert events.named("records_settled") == [{"attempts": {1: 4}}]
    assert [e["count"] for e in events.named("requests_in_flight")] == [1, 0]
    assert [(e["reason"], e["shards"]) for e in events.named("shard_map_refreshed")] == [("start", 1)]
    assert {(e.shard_id, e.attempts) for e in batch} == {("shardId-000000000000", 1)}
    assert len({e.sequence_number for e in batch}) == 4


def test_an_empty_batch_makes_no_request(
    kinesis_fake: Callable[..., ScriptedKinesis], make_sink: Callable[..., KinesisSink]
) -> None:
    """Delivering nothing reports nothing and puts nothing (only the start-up ListShards is made)."""
    fake = kinesis_fake()
    result = deliver(make_sink(fake.server.endpoint_url), [])
    assert (result.sent, result.failed, result.unsent) == ([], [], [])
    assert [call.operation for call in fake.server.calls] == ["ListShards"]


def test_a_sink_without_a_stream_name_is_refused() -> None:
    """The daemon fills `stream` from the stack; a sink built without one fails loudly at construction."""
    with pytest.raises(ValueError, match="stream"):
        KinesisSink(KinesisSinkConfig(), RecordingEvents())


@pytest.mark.parametrize(
    ("event", "key"),
    [
        ({"data": {"id": "1", "author_id": "42"}, "includes": {}}, "42"),  # X v2 stream line
        ({"did": "did:plc:abc", "time_us": 1, "kind": "commit"}, "did:plc:abc"),  # Jetstream
        ({"user_id": "u-7", "session_id": "s", "id": "e-1"}, "u-7"),  # synthetic clickstream
        ({"device_id": "dev-3", "id": "r-9"}, "dev-3"),  # synthetic iot
        ({"id": "1093", "account": {"id": "5", "acct": "a"}, "content": "<p>x</p>"}, "1093"),  # Mastodon status
        ({"event": "delete", "id": "1093", "instance": "example.social"}, "1093"),  # its delete: same shard
    ],
)
def test_default_paths_key_each_bundled_source_by_what_orders_its_records(event: Any, key: str) -> None:
    """With the sink's defaults every bundled source's records get a key (author, did, visitor, device, status)."""
    builder = EntryBuilder(KinesisSinkConfig().partition_key, max_record_bytes=4096)
    assert builder.build(record_of(event)).partition_key == key
