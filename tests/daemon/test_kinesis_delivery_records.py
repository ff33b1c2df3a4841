"""Issue 14's "Done when" through the real daemon process, continued: records the sink must refuse or re-key,
a split of a shard mid-run, aggregation and ordered mode (these two skip until the daemon accepts their keys).
Helpers and the fault tests: tests/daemon/test_kinesis_delivery.py."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_kinesis_delivery import (
    LAND_TIMEOUT_S,
    POSSIBLE_DUPLICATES,
    SHARDS,
    check_config_refusal,
    config_body,
    dead_letters,
    deliver_all,
    line_number,
    start,
    stop,
    totals,
    tweet_lines,
    unpaced,
    write_lines,
)
from tests.fake_kinesis import KPL_MAGIC, FakeKinesis


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    """A seeded 4-shard fake stream; its own defects must stay absent."""
    with FakeKinesis(SHARDS, seed=17) as kinesis:
        yield kinesis
        assert kinesis.stats().internal_errors == ()


MAX_RECORD_BYTES = 2048
# Keys Kinesis would refuse (1-256 characters) or that are no key at all; none may make the stream refuse a call.
OVERLONG_KEY = "k" * 300


def awkward_lines() -> tuple[list[tuple[bytes, str]], list[tuple[bytes, str]]]:
    """(line, reason) for lines the daemon must dead-letter, and (line, partition key it must be stored under)
    for lines whose key Kinesis could not take as it is."""
    oversize = json.dumps({"data": {"id": "big", "author_id": "a1", "text": "x" * (MAX_RECORD_BYTES + 100)}}).encode()
    lone_surrogate = b'{"data": {"id": "ls", "author_id": "\\ud800", "text": "a key that is no Unicode text"}}'
    dead = [(oversize, "record_too_large")] * 2 + [(lone_surrogate, "invalid_unicode")] * 2
    overlong = json.dumps({"data": {"id": "long", "author_id": OVERLONG_KEY, "text": "t"}}).encode()
    not_text = json.dumps({"data": {"id": "bool", "author_id": True, "text": "t"}}).encode()
    empty = json.dumps({"data": {"id": "empty", "author_id": "", "text": "t"}}).encode()
    stand_ins = [
        (overlong, hashlib.sha256(OVERLONG_KEY.encode()).hexdigest()),  # records.py: SHA-256 of the whole key
        (not_text, hashlib.md5(not_text, usedforsecurity=False).hexdigest()),  # no usable key: MD5 of the record's bytes
        (empty, hashlib.md5(empty, usedforsecurity=False).hexdigest()),
    ]
    return dead, stand_ins


def test_oversize_and_bad_key_records_are_dead_lettered_with_reasons_or_sent_under_a_stand_in_key(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis
) -> None:
    """Oversize and lone-surrogate-key lines dead-lettered with line and reason, never stored; unusable keys get stand-ins."""
    good = tweet_lines(1000)
    dead, stand_ins = awkward_lines()
    lines = list(good)
    for index, (line, _) in enumerate(dead):
        lines.insert(100 + 200 * index, line)
    for index, (line, _) in enumerate(stand_ins):
        lines.insert(150 + 200 * index, line)
    reason_of = dict(dead)
    expected_dead = sorted((number, reason_of[line]) for number, line in enumerate(lines, start=1) if line in reason_of)
    assert len(expected_dead) == len(dead)
    delivered = good + [line for line, _ in stand_ins]
    extra = f"  max_record_bytes: {MAX_RECORD_BYTES}\n"
    run = deliver_all(daemon_factory, tmp_path, fake, lines, sink_extra=extra, deliverable=len(delivered))

    assert fake.data_counts() == Counter(delivered)
    keys = {r.data: r.partition_key for r in fake.records()}
    assert [keys[line] for line, _ in stand_ins] == [key for _, key in stand_ins]
    assert sorted((line_number(d["origin"]), d["reason"]) for d in dead_letters(tmp_path)) == expected_dead
    assert fake.stats().refused_entries.total() == 0
    assert not [e for e in run.daemon.logs() if e.get("event") == "put_failed"], "the stream refused an entry"
    assert totals(run.summary) == (len(lines), len(delivered), len(dead), 0, 0)


AGGREGATION = "  aggregation:\n    enabled: true\n"
ORDERED = "  ordered: true\n"
PARENT = "shardId-000000000000"
# For this long after the split, a call with an entry in the closed parent's range is refused
# (ResourceNotFoundException), as Kinesis may briefly do.
REJECT_CLOSED_S = 0.5


def skip_unless_accepted(tmp_path: Path, fake: FakeKinesis, sink_extra: str) -> None:
    """Skips the test while the daemon's config refuses `sink_extra` (keys of the delivery engine, not yet merged)."""
    refusal = check_config_refusal(tmp_path, config_body(tmp_path / "tweets.jsonl", fake, sink_extra=sink_extra))
    if refusal is not None:
        pytest.skip(f"check-config refuses {sink_extra.strip()!r}: {refusal.splitlines()[0]}")


@pytest.mark.parametrize(
    ("sink_extra", "reject_closed_s"),
    [("", REJECT_CLOSED_S), (AGGREGATION, REJECT_CLOSED_S), (AGGREGATION, 0.0)],
    ids=["plain", "aggregated", "aggregated_unrefused"],
)
def test_a_split_during_the_run_loses_nothing_and_misroutes_no_user_record(
    tmp_path: Path, daemon_factory: Any, sink_extra: str, reject_closed_s: float
) -> None:
    """Shard 0 splits while records flow: every record stored, on both sides of the split, each in its own shard."""
    lines = tweet_lines(6000)
    fake = FakeKinesis(SHARDS, seed=16, reject_closed_for_s=reject_closed_s)
    with fake:
        if sink_extra:
            skip_unless_accepted(tmp_path, fake, sink_extra)
        replay = write_lines(tmp_path / "tweets.jsonl", lines)
        daemon = start(daemon_factory, config_body(replay, fake, rate=2000, sink_extra=sink_extra))
        assert fake.wait_until(lambda f: len(f.user_records()) >= len(lines) // 4, LAND_TIMEOUT_S)
        children = fake.split(PARENT)
        assert fake.wait_for_user_records(len(lines), LAND_TIMEOUT_S), f"{len(fake.user_records())} of {len(lines)} stored"
        metrics = daemon.metrics()
        summary = stop(daemon)
        users = fake.user_records()
        misrouted = fake.misrouted_user_records()
        assert fake.stats().internal_errors == ()

    landed = Counter(u.shard_id for u in users)
    assert landed[PARENT] > 0 and all(landed[child] > 0 for child in children), landed
    assert totals(summary) == (len(lines), len(lines), 0, 0, 0)
    outside = set(misrouted)
    placed = Counter(u.data for u in users if u not in outside)
    assert set(placed) == set(lines), "a record is missing from its own shard"
    if not sink_extra:
        # A plain record lands where its hash says, and one the stream took is never sent again.
        assert Counter(u.data for u in users) == Counter(lines) and misrouted == []
    elif reject_closed_s:
        # The stream refused the closed range until the sink saw the split: no aggregate may straddle it.
        assert misrouted == []
    else:
        # Kinesis puts writes into a closed range on its children: an aggregate sent before the sink saw the
        # split can carry members of the other child there. Each such member is sent again (above: placed in its
        # own shard) and counted as a possible duplicate.
        counted = sum(v for k, v in metrics.items() if k.startswith(POSSIBLE_DUPLICATES))
        assert counted >= len(misrouted), f"{len(misrouted)} misrouted members, {counted} counted as possible duplicates"


def test_aggregated_records_deaggregate_to_the_input_each_aggregate_of_its_shard(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis
) -> None:
    """aggregation on, 20 % entry failures: deaggregated, the stream is the input once each, in few Kinesis records."""
    skip_unless_accepted(tmp_path, fake, AGGREGATION)
    lines = tweet_lines(10_000)
    fake.set_faults(entry_failure_rate=0.2)
    run = deliver_all(daemon_factory, tmp_path, fake, lines, sink_extra=AGGREGATION)

    assert fake.data_counts() == Counter(lines)
    assert fake.misrouted_user_records() == []
    stored = fake.records()
    assert all(r.data.startswith(KPL_MAGIC) for r in stored[:10])
    assert len(stored) < len(lines) / 20, "records were not packed into aggregates"
    assert totals(run.summary) == (len(lines), len(lines), 0, 0, 0)


def test_ordered_keeps_each_keys_file_order_in_the_stream_under_entry_failures(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis
) -> None:
    """ordered: true, 20 % entry failures: per partition key the stream holds the file's records in file order, once."""
    skip_unless_accepted(tmp_path, fake, ORDERED)
    lines = tweet_lines(4000, authors=40)
    fake.set_faults(entry_failure_rate=0.2)
    run = deliver_all(daemon_factory, tmp_path, fake, lines, sink_extra=ORDERED + unpaced(tmp_path, fake))

    expected: dict[str, list[bytes]] = {}
    for line in lines:
        expected.setdefault(json.loads(line)["data"]["author_id"], []).append(line)
    assert fake.data_by_key() == expected
    assert fake.stats().refused_entries.total() > 0
    assert totals(run.summary) == (len(lines), len(lines), 0, 0, 0)
