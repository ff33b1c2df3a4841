"""Property tests of the Kinesis entry builder: whatever bytes and parsed event a source hands over, the
result is a valid entry (key 1-256 characters however counted, size = data + key bytes, data untouched)
or RecordRejected with a reason; nothing else is ever raised."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinks.base import Record, RecordRejected
from sinks.kinesis.records import MAX_PARTITION_KEY_CHARS, EntryBuilder, hash_key_of, key_fits

PATHS = ["data.author_id", "user.id_str", "author_id"]
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any text, lone surrogates included (json.loads produces them from "\ud800"), and astral characters.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=400)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text | st.integers(min_value=10**300)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3), max_leaves=8
)
# Keys of random types put exactly where the builder looks, in some random shape of event.
key_values = json_values | st.text(min_size=250, max_size=600) | st.text(st.sampled_from("😀中é"), min_size=100, max_size=300)


@st.composite
def events(draw: st.DrawFn) -> Any:
    event = draw(st.dictionaries(any_text, json_values, max_size=3))
    if draw(st.booleans()):
        event["data"] = draw(st.dictionaries(st.just("author_id"), key_values, max_size=1) | json_values)
    if draw(st.booleans()):
        event["user"] = draw(st.dictionaries(st.just("id_str"), key_values, max_size=1) | json_values)
    if draw(st.booleans()):
        event["author_id"] = draw(key_values)
    return draw(st.just(event) | json_values)


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


@EXAMPLES
@given(data=st.binary(max_size=2048), event=events(), limit=st.integers(min_value=1, max_value=4096))
def test_build_returns_a_valid_entry_or_rejects_with_a_reason(data: bytes, event: Any, limit: int) -> None:
    """Entry: key 1-256 (code points and UTF-16 units), valid UTF-8, size = len(data) + key bytes <= limit,
    the record and its bytes unchanged. Otherwise RecordRejected with a reason and a detail; nothing else raises."""
    record = Record(data, event, "prop", "prop:1")
    builder = EntryBuilder(PATHS, max_record_bytes=limit)
    try:
        entry = builder.build(record)
    except RecordRejected as rejected:
        assert rejected.reason and rejected.detail
        return
    key = entry.partition_key
    assert 1 <= len(key) <= MAX_PARTITION_KEY_CHARS and utf16_units(key) <= MAX_PARTITION_KEY_CHARS
    assert entry.size == len(data) + len(key.encode("utf-8")) <= limit
    assert entry.record is record and entry.record.data is data


@EXAMPLES
@given(event=events(), data=st.binary(max_size=64))
def test_the_key_is_a_function_of_the_record(event: Any, data: bytes) -> None:
    """The same record always gets the same key (a resent record keeps its shard)."""
    builder = EntryBuilder(PATHS, max_record_bytes=1 << 20)
    first = builder.build(Record(data, event, "prop", "prop:1")).partition_key
    assert builder.build(Record(data, event, "prop", "prop:2")).partition_key == first


@EXAMPLES
@given(key=st.text(st.characters(codec=None, exclude_categories=()), min_size=1, max_size=600))
def test_a_string_key_is_kept_when_it_fits_and_hashed_whole_otherwise(key: str) -> None:
    """A key Kinesis takes is used as is; any other becomes the SHA-256 of the whole key, so keys that differ
    anywhere, beyond the 256th character too, stay different."""
    builder = EntryBuilder(["author_id"], max_record_bytes=1 << 20)
    got = builder.build(Record(b"x", {"author_id": key}, "prop", "prop:1")).partition_key
    if key_fits(key):
        assert got == key
    else:
        assert got == hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        other = builder.build(Record(b"x", {"author_id": key + "!"}, "prop", "prop:1")).partition_key
        assert other != got


@settings(max_examples=300, deadline=None)
@given(key=st.text(st.characters(codec="utf-8"), min_size=0, max_size=300))
def test_the_fast_paths_agree_with_the_definitions(key: str) -> None:
    """hash_key_of is MD5 of the UTF-8 key, big-endian, and key_fits' ASCII shortcut gives the counted answer."""
    assert hash_key_of(key) == int.from_bytes(hashlib.md5(key.encode("utf-8"), usedforsecurity=False).digest(), "big")
    units = len(key.encode("utf-16-le")) // 2
    assert key_fits(key) == (0 < len(key) <= MAX_PARTITION_KEY_CHARS and units <= MAX_PARTITION_KEY_CHARS)
