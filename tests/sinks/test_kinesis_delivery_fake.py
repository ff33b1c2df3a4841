"""Issue 14's "Done when", against tests/fake_kinesis.py (a real HTTP multi-shard Kinesis) through the real
wire client: outcomes checked in the fake's storage (aggregates opened with aws_kinesis_agg)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from sinks.base import Deadline, Record, RecordRejected
from sinks.kinesis import KinesisSink
from sinks.kinesis.records import REASON_RECORD_TOO_LARGE, KinesisEntry
from sinks.kinesis.retry import REASON_PUT_REJECTED
from tests.fake_kinesis import FakeKinesis
from tests.sinks.conftest import Completions, RecordingEvents, deliver

DEADLINE_S = 120.0  # far above each run's seconds; reached only if delivery is broken
MakeSink = Callable[..., KinesisSink]


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    """A 4-shard fake stream, seeded."""
    with FakeKinesis(4, seed=14) as kinesis:
        yield kinesis


def small_records(count: int, keys: int = 2000, size: int = 60) -> list[Record]:
    """`count` distinct records of about `size` bytes over `keys` partition keys (user_id)."""
    pad = "p" * size
    return [Record(json.dumps({"user_id": f"u{i % keys}", "n": i, "pad": pad}).encode(), {"user_id": f"u{i % keys}"},
                   "test", f"test:{i}") for i in range(count)]


def sink_for(make_sink: MakeSink, fake: FakeKinesis, **config: object) -> KinesisSink:
    return make_sink(fake.url, stream=fake.stream, **config)


def test_100k_records_at_30_percent_injected_failures_are_in_the_stream_exactly_once(
    fake: FakeKinesis, make_sink: MakeSink
) -> None:
    """30 % of entries refused at random on every call: each of 100,000 records is stored exactly once."""
    fake.set_faults(entry_failure_rate=0.3)
    sink = sink_for(make_sink, fake, linger=0.01)
    records = small_records(100_000)
    entries = [sink.prepare(r) for r in records]
    result = deliver(sink, entries, DEADLINE_S)
    assert len(result.sent) == len(records) and not result.failed and not result.unsent
    assert fake.data_counts() == Counter(r.data for r in records)
    assert fake.stats().refused_entries["ProvisionedThroughputExceededException"] > 0.2 * len(records)


def test_500s_slow_answers_and_resets_lose_nothing_and_duplicates_come_only_from_lost_answers(
    fake: FakeKinesis, make_sink: MakeSink, events: RecordingEvents
) -> None:
    """Whole-call 500s, resets before and after storing, answers slower than the read timeout: every record is
    stored; extra copies exist only if answers were lost, never more than the entries of those calls, and
    duplicates_possible counted at least as many."""
    fake.set_faults(call_failure_rate=0.1, reset_before_rate=0.1, reset_after_rate=0.08, slow_rate=0.05, slow_delay_s=0.6)
    sink = sink_for(make_sink, fake, linger=0.005, max_batch_records=50, read_timeout=0.3)
    records = small_records(3000)
    result = deliver(sink, [sink.prepare(r) for r in records], DEADLINE_S)
    assert len(result.sent) == len(records) and not result.failed
    counts = fake.data_counts()
    assert set(counts) == {r.data for r in records}
    extra = sum(counts.values()) - len(records)
    injected = fake.stats().injected
    assert injected["reset_after"] + injected["slow"] > 0 and injected["call_failure"] > 0
    assert extra <= (injected["reset_after"] + injected["slow"]) * 50
    counted = sum(d["records"] for d in events.named("duplicates_possible") if d["reason"] == "answer_lost")
    assert counted >= extra


def test_aggregated_records_deaggregate_to_the_input_each_aggregate_of_one_shard(
    fake: FakeKinesis, make_sink: MakeSink, events: RecordingEvents
) -> None:
    """aggregation on, 20 % entry failures: deaggregated (aws_kinesis_agg) the stream holds each input record
    once, no member lies outside its shard's range, and Kinesis records are far fewer than user records."""
    fake.set_faults(entry_failure_rate=0.2)
    sink = sink_for(make_sink, fake, linger=0.01, aggregation={"enabled": True, "max_bytes": 8192})
    records = small_records(20_000)
    result = deliver(sink, [sink.prepare(r) for r in records], DEADLINE_S)
    assert len(result.sent) == len(records)
    assert fake.data_counts() == Counter(r.data for r in records)
    assert fake.misrouted_user_records() == []
    assert sum(fake.stats().accepted.values()) < len(records) / 20
    assert sum(a["user_records"] for a in events.named("records_aggregated")) >= len(records)


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
def test_a_split_during_the_run_misroutes_no_user_record_and_loses_nothing(
    fake: FakeKinesis, make_sink: MakeSink, events: RecordingEvents, aggregate: bool
) -> None:
    """Shard 0 splits while records flow: nothing lost, no stored user record outside its landing shard's
    range (misrouted aggregates are re-sent per member), and the sink refreshed its map."""
    sink = sink_for(make_sink, fake, linger=0.005, max_batch_records=100, aggregation={"enabled": aggregate, "max_bytes": 4096})
    records = small_records(20_000)
    entries = [sink.prepare(r) for r in records]
    completions = Completions()
    sink.start(completions)
    half = len(entries) // 2
    assert sink.submit(entries[:half], Deadline()) == half
    completions.wait_for(lambda: len(completions.result.sent) >= half // 2, DEADLINE_S, "a quarter sent")
    fake.split("shardId-000000000000")
    assert sink.submit(entries[half:], Deadline()) == len(entries) - half
    sink.finish(Deadline())
    assert len(completions.result.sent) == len(entries)
    assert set(fake.data_counts()) == {r.data for r in records}
    if aggregate:
        users = Counter(u.data for u in fake.user_records() if not _outside(fake, u.shard_id, u.hash_key))
        assert set(users) == {r.data for r in records}  # each record in an aggregate of its own shard
    else:
        assert fake.misrouted_user_records() == []
    assert any(e["changed"] for e in events.named("shard_map_refreshed") if e["reason"] != "start")


def _outside(fake: FakeKinesis, shard_id: str, hash_key: int) -> bool:
    shard = next(s for s in fake.shards() if s.shard_id == shard_id)
    return not (shard.start <= hash_key <= shard.end)


def test_oversize_and_bad_key_records_are_dead_lettered_with_reasons(fake: FakeKinesis, make_sink: MakeSink) -> None:
    """An oversize record is refused by prepare (record_too_large); an entry whose key Kinesis refuses (empty)
    is dead-lettered put_rejected with the endpoint's reason; the rest are stored once."""
    sink = sink_for(make_sink, fake, max_record_bytes=2048)
    with pytest.raises(RecordRejected) as raised:
        sink.prepare(Record(b"x" * 4096, {"user_id": "big"}, "test", "test:big"))
    assert raised.value.reason == REASON_RECORD_TOO_LARGE
    good = [sink.prepare(r) for r in small_records(30)]
    bad_record = Record(b'{"bad": "key"}', None, "test", "test:bad")
    bad = KinesisEntry(bad_record, "", len(bad_record.data), 0)
    result = deliver(sink, [*good[:10], bad, *good[10:]], DEADLINE_S)
    assert [(e, reason) for e, reason, _ in result.failed] == [(bad, REASON_PUT_REJECTED)]
    assert "partitionkey" in result.failed[0][2].lower()
    assert fake.data_counts() == Counter(e.data for e in good)


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregated"])
def test_ordered_keeps_each_keys_order_in_the_stream_under_failures(
    fake: FakeKinesis, make_sink: MakeSink, aggregate: bool
) -> None:
    """ordered, 30 % entry failures and some 500s: per partition key, the stream's records (by arrival, members
    in aggregate order) are the input's order, each once."""
    fake.set_faults(entry_failure_rate=0.3, call_failure_rate=0.05)
    sink = sink_for(make_sink, fake, ordered=True, linger=0.005, aggregation={"enabled": aggregate, "max_bytes": 4096})
    records = small_records(4000, keys=40)
    deliver(sink, [sink.prepare(r) for r in records], DEADLINE_S)
    stored: dict[str, list[bytes]] = {}
    for user in sorted(fake.user_records(), key=lambda u: (u.arrival, u.sub_index or 0)):
        stored.setdefault(user.partition_key, []).append(user.data)
    expected: dict[str, list[bytes]] = {}
    for record in records:
        expected.setdefault(json.loads(record.data)["user_id"], []).append(record.data)
    assert stored == expected

