"""KPL aggregation: what the aggregator packs is what aws-kinesis-agg and this repo's processor unpack, in
order, within the size and count limits, byte for byte the protobuf an independent encoder writes."""

from __future__ import annotations

import base64
import hashlib
import itertools
from types import SimpleNamespace
from typing import Any

import pytest
from aws_kinesis_agg import deaggregator
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.decoding import user_records
from sinks.base import Record
from sinks.kinesis.aggregate import FRAME_BYTES, KPL_MAGIC, Aggregate, Aggregator, aggregate_all
from sinks.kinesis.records import KinesisEntry, hash_key_of

EXAMPLES = settings(max_examples=200, deadline=None)
MAX_HASH_KEY = 2**128 - 1

# A few keys that repeat (authors post more than once), and arbitrary ones (astral and non-Latin text).
common_keys = st.sampled_from(["alice", "bob", "Ωmega", "作者", "🐦" * 3, "x" * 256])
any_keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
payloads = st.binary(max_size=300) | st.binary(max_size=40).map(lambda b: KPL_MAGIC + b)


def make_entry(data: bytes, key: str, explicit: int | None = None) -> KinesisEntry:
    """An entry as EntryBuilder makes it, with an explicit hash key when `explicit` is given."""
    entry = KinesisEntry(Record(data, None, "test", "test:1"), key, len(data) + len(key.encode()), hash_key_of(key))
    if explicit is not None:
        entry.explicit_hash_key = str(explicit)
        entry.hash_key = explicit
    return entry


@st.composite
def entry_lists(draw: st.DrawFn, *, explicit: bool = True) -> list[KinesisEntry]:
    items = st.tuples(
        payloads,
        common_keys | any_keys,
        st.none() | st.integers(0, MAX_HASH_KEY) if explicit else st.none(),
    )
    return [make_entry(*item) for item in draw(st.lists(items, max_size=60))]


def reference_body(members: list[KinesisEntry]) -> bytes:
    """The AggregatedRecord for `members` serialised by protobuf itself (the KPL's message definition)."""
    message = deaggregator.messages_pb2.AggregatedRecord()
    keys: dict[str, int] = {}
    hashes: dict[str, int] = {}
    with_hashes = any(m.explicit_hash_key is not None for m in members)
    for member in members:
        if member.partition_key not in keys:
            keys[member.partition_key] = len(keys)
            message.partition_key_table.append(member.partition_key)
        user = message.records.add()
        user.partition_key_index = keys[member.partition_key]
        user.data = member.data
        if with_hashes:
            ehk = member.explicit_hash_key or str(member.hash_key)
            if ehk not in hashes:
                hashes[ehk] = len(hashes)
                message.explicit_hash_key_table.append(ehk)
            user.explicit_hash_key_index = hashes[ehk]
    return message.SerializeToString()


def framed_size(members: list[KinesisEntry]) -> int:
    """What an aggregate of `members` would count as framed: magic + protobuf + MD5 + the first key."""
    return FRAME_BYTES + len(reference_body(members)) + len(members[0].partition_key.encode())


def lambda_record(aggregate: Aggregate) -> dict[str, Any]:
    """The aggregate as a Lambda Kinesis event record delivers it (base64 data)."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": aggregate.partition_key,
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "data": base64.b64encode(aggregate.data).decode(),
            "approximateArrivalTimestamp": 1_700_000_000.0,
        },
        "eventSource": "aws:kinesis",
        "eventID": "shardId-000000000000:49590338271490256608559692538361571095921575989136588898",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/tweets",
    }


def is_framed(aggregate: Aggregate) -> bool:
    return len(aggregate.members) > 1 or aggregate.members[0].data.startswith(KPL_MAGIC)


@EXAMPLES
@given(entry_lists(), st.integers(1, 3000), st.integers(1, 40))
def test_aggregates_deaggregate_to_their_members_within_the_limits(
    entries: list[KinesisEntry], max_bytes: int, max_records: int
) -> None:
    """aws-kinesis-agg and the processor get back each member's data, key and hash key in order; limits hold."""
    aggregates = aggregate_all(entries, max_bytes, max_records)
    assert [m for a in aggregates for m in a.members] == entries  # same objects, same order, none twice
    for aggregate in aggregates:
        members = aggregate.members
        first = members[0]
        assert 1 <= len(members) <= max_records
        assert aggregate.partition_key == first.partition_key
        assert aggregate.explicit_hash_key == str(first.hash_key)
        assert aggregate.size == len(aggregate.data) + len(aggregate.partition_key.encode())
        if len(members) > 1:
            assert aggregate.size <= max_bytes
        user = deaggregator.deaggregate_records([lambda_record(aggregate)])
        assert [base64.b64decode(u["kinesis"]["data"]) for u in user] == [m.data for m in members]
        assert [u["kinesis"]["partitionKey"] for u in user] == [m.partition_key for m in members]
        decoded = user_records(lambda_record(aggregate))
        assert [(u.partition_key, u.data) for u in decoded] == [(m.partition_key, m.data) for m in members]
        if is_framed(aggregate):
            assert aggregate.size == framed_size(members)
            body = reference_body(members)
            assert aggregate.data == KPL_MAGIC + body + hashlib.md5(body).digest()  # noqa: S324 - KPL's checksum
            if any(m.explicit_hash_key is not None for m in members):
                assert [u["kinesis"]["explicitHashKey"] for u in user] == [str(m.hash_key) for m in members]
        else:  # a lone member goes as itself
            assert aggregate.data == first.data
            assert aggregate.size == first.size


@EXAMPLES
@given(entry_lists(), st.integers(1, 3000), st.integers(1, 40))
def test_aggregate_all_packs_greedily(entries: list[KinesisEntry], max_bytes: int, max_records: int) -> None:
    """Each aggregate is closed only because the next entry would break a limit (by the reference encoder)."""
    aggregates = aggregate_all(entries, max_bytes, max_records)
    for current, following in itertools.pairwise(aggregates):
        grown = [*current.members, following.members[0]]
        assert len(grown) > max_records or framed_size(grown) > max_bytes


@EXAMPLES
@given(entry_lists(), st.integers(1, 3000), st.integers(1, 40))
def test_add_returns_the_full_aggregate_without_the_entry_that_did_not_fit(
    entries: list[KinesisEntry], max_bytes: int, max_records: int
) -> None:
    """add() hands back a full aggregate (of the announced size) exactly when the entry did not fit, then holds it."""
    aggregator = Aggregator(max_bytes, max_records)
    held: list[KinesisEntry] = []
    for entry in entries:
        pending = aggregator.size
        full = aggregator.add(entry)
        if full is None:
            held.append(entry)
        else:
            assert full.members == held
            assert full.size == pending  # what `size` announced is what came out
            held = [entry]
        assert len(aggregator) == len(held)
    pending = aggregator.size
    last = aggregator.flush()
    assert (last.members if last else []) == held
    assert (last.size if last else 0) == pending
    assert aggregator.size == 0
    assert len(aggregator) == 0
    assert aggregator.flush() is None


def test_partition_key_table_is_deduplicated() -> None:
    """A key shared by many members is stored once; members point at it by index."""
    entries = [make_entry(b"tweet %d" % i, ["alice", "bob", "carol"][i % 3]) for i in range(30)]
    (aggregate,) = aggregate_all(entries, 51200, 1000)
    message = deaggregator.messages_pb2.AggregatedRecord()
    message.ParseFromString(aggregate.data[len(KPL_MAGIC) : -16])
    assert list(message.partition_key_table) == ["alice", "bob", "carol"]
    assert [r.partition_key_index for r in message.records] == [i % 3 for i in range(30)]
    assert not message.explicit_hash_key_table
    assert not any(r.HasField("explicit_hash_key_index") for r in message.records)


def test_md5_trailer_covers_the_protobuf() -> None:
    """The last 16 bytes are the MD5 of everything between the magic bytes and them."""
    (aggregate,) = aggregate_all([make_entry(b"a" * 100, "k1"), make_entry(b"b" * 100, "k2")], 51200, 1000)
    assert aggregate.data.startswith(KPL_MAGIC)
    assert aggregate.data[-16:] == hashlib.md5(aggregate.data[4:-16]).digest()  # noqa: S324 - KPL's checksum


def test_empty_aggregator_flushes_nothing() -> None:
    """flush() of an empty aggregator is None, and aggregate_all of nothing is empty."""
    aggregator = Aggregator(51200, 1000)
    assert aggregator.flush() is None
    assert len(aggregator) == 0
    assert aggregate_all([], 51200, 1000) == []


def test_max_records_closes_an_aggregate() -> None:
    """Small records fill aggregates of exactly max_records."""
    entries = [make_entry(b"x", "k") for _ in range(25)]
    assert [len(a.members) for a in aggregate_all(entries, 51200, 10)] == [10, 10, 5]


def test_aggregate_of_one_kilobyte_tweets_stays_within_max_bytes() -> None:
    """The default 51,200-byte aggregate takes as many 1 KB records as fit, and never one byte more."""
    entries = [make_entry(b"{" + b"t" * 1000 + b"}", f"author-{i % 7}") for i in range(500)]
    aggregates = aggregate_all(entries, 51200, 1000)
    assert all(a.size <= 51200 for a in aggregates)
    assert all(a.size + 1010 > 51200 for a in aggregates[:-1])  # the next record would not have fitted
    assert sum(len(a.members) for a in aggregates) == 500
    assert len(aggregates[0].members) == 50


def test_member_bigger_than_max_bytes_goes_alone_as_a_plain_record() -> None:
    """An entry that cannot fit any aggregate is emitted by itself, unframed, between its neighbours."""
    small, big, after = make_entry(b"s" * 10, "k"), make_entry(b"B" * 5000, "big"), make_entry(b"a" * 10, "k")
    aggregator = Aggregator(1000, 1000)
    assert aggregator.add(small) is None
    first = aggregator.add(big)
    assert first is not None and first.members == [small]
    alone = aggregator.add(after)
    assert alone is not None and alone.members == [big]
    assert alone.data == big.data and alone.size == big.size > 1000
    assert alone.partition_key == "big" and alone.explicit_hash_key == str(big.hash_key)
    last = aggregator.flush()
    assert last is not None and last.members == [after]


def test_lone_member_that_looks_like_an_aggregate_is_framed() -> None:
    """Data starting with the KPL magic bytes is always wrapped, or a consumer would misread it."""
    entry = make_entry(KPL_MAGIC + b"not an aggregate", "k")
    (aggregate,) = aggregate_all([entry], 51200, 1000)
    assert aggregate.data != entry.data
    assert [u.data for u in user_records(lambda_record(aggregate))] == [entry.data]


def test_first_explicit_hash_key_gives_every_member_an_index() -> None:
    """Members added before the first explicit hash key are re-indexed: each gets its own hash key back."""
    plain = [make_entry(b"p%d" % i, f"key-{i % 2}") for i in range(4)]
    explicit = make_entry(b"e", "key-0", explicit=12345)
    aggregator = Aggregator(51200, 1000)
    for entry in [*plain, explicit, make_entry(b"late", "key-1")]:
        assert aggregator.add(entry) is None
    aggregate = aggregator.flush()
    assert aggregate is not None
    user = deaggregator.deaggregate_records([lambda_record(aggregate)])
    expected = [str(hash_key_of("key-0")), str(hash_key_of("key-1"))] * 2 + ["12345", str(hash_key_of("key-1"))]
    assert [u["kinesis"]["explicitHashKey"] for u in user] == expected
    assert aggregate.size == framed_size(aggregate.members) == len(aggregate.data) + len(b"key-0")


def test_explicit_hash_key_that_would_overflow_closes_the_aggregate() -> None:
    """When re-indexing for a first explicit hash key would pass max_bytes, the aggregate closes unchanged."""
    plain = [make_entry(b"d" * 40, "k") for _ in range(10)]
    limit = framed_size(plain)  # exactly full without any explicit hash key
    aggregator = Aggregator(limit + 60, 1000)  # room for one more plain member, not for the re-indexing
    for entry in plain:
        assert aggregator.add(entry) is None
    full = aggregator.add(make_entry(b"d" * 10, "k", explicit=MAX_HASH_KEY))
    assert full is not None and full.members == plain and full.size == limit
    assert full.data == KPL_MAGIC + reference_body(plain) + hashlib.md5(reference_body(plain)).digest()  # noqa: S324


@pytest.mark.parametrize(("max_bytes", "max_records"), [(0, 10), (100, 0), (-1, -1)])
def test_limits_below_one_are_refused(max_bytes: int, max_records: int) -> None:
    """An aggregator that could hold nothing is a configuration error, not an endless loop."""
    with pytest.raises(ValueError, match="at least 1"):
        Aggregator(max_bytes, max_records)


@pytest.mark.parametrize("length", [0, 127, 128, 16_383, 16_384, 2**21 - 40, 2**21 + 5])
def test_varint_boundaries_match_protobuf(length: int) -> None:
    """Lengths on each side of the 1-, 2- and 3-byte varint boundaries encode as protobuf encodes them."""
    members = [make_entry(b"v" * length, "k"), make_entry(b"w", "k2")]
    (aggregate,) = aggregate_all(members, 2**22, 1000)
    body = reference_body(members)
    assert aggregate.data == KPL_MAGIC + body + hashlib.md5(body).digest()  # noqa: S324 - KPL's checksum
    assert aggregate.size == framed_size(members)


def test_more_distinct_keys_than_the_cached_indices() -> None:
    """An aggregate of 1,100 distinct keys (past the precomputed key indices) still matches protobuf's bytes."""
    members = [make_entry(b"d%d" % i, f"key-{i}") for i in range(1100)]
    (aggregate,) = aggregate_all(members, 2**20, 2000)
    body = reference_body(members)
    assert aggregate.data == KPL_MAGIC + body + hashlib.md5(body).digest()  # noqa: S324 - KPL's checksum
    assert [u.partition_key for u in user_records(lambda_record(aggregate))] == [m.partition_key for m in members]


def test_a_failed_build_keeps_the_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """If building the aggregate raises (say MemoryError), the members stay held and the next flush has them."""
    aggregator = Aggregator(51200, 1000)
    entries = [make_entry(b"one", "a"), make_entry(b"two", "b")]
    for entry in entries:
        aggregator.add(entry)

    def broken_md5(data: bytes, *, usedforsecurity: bool = True) -> Any:
        raise MemoryError("injected")

    monkeypatch.setattr("sinks.kinesis.aggregate.hashlib", SimpleNamespace(md5=broken_md5))
    with pytest.raises(MemoryError):
        aggregator.flush()
    assert len(aggregator) == 2
    monkeypatch.undo()
    aggregate = aggregator.flush()
    assert aggregate is not None and aggregate.members == entries
    assert [u.data for u in user_records(lambda_record(aggregate))] == [b"one", b"two"]
