"""The synthetic source: deterministic records of each kind that the processor maps, paced, counted, stoppable."""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from processor.items import build_item
from processor.mappings import GenericPaths, map_event
from sources.parsing import parse_json_record
from sources.synthetic import MAX_RECORD_BYTES, SyntheticSource, SyntheticSourceConfig, build_kind
from tests.fakes import RecordingContext

KINDS = ("tweets", "clickstream", "iot")
START = "2026-11-01T12:00:00Z"
# A stop must be noticed well inside the daemon's 5 s source join.
STOP_NOTICED_S = 1.0
JOIN_TIMEOUT_S = 10.0
ARRIVAL = datetime(2026, 11, 2, tzinfo=UTC)


def synthetic_context(**options: Any) -> RecordingContext:
    """A recording context on which any reject fails the test: every synthetic record must be valid."""
    return RecordingContext(name="synthetic", rejects_fail=True, **options)


def make(**config: Any) -> SyntheticSource:
    return SyntheticSource(SyntheticSourceConfig(**config))


def run(**config: Any) -> list[bytes]:
    ctx = synthetic_context()
    make(**config).run(ctx)
    return [data for data, _, _ in ctx.emitted]


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_other_seed_other_bytes(kind: str) -> None:
    """With start_time fixed, two runs of one config give identical bytes; another seed gives other records."""
    first = run(kind=kind, seed=11, count=600, start_time=START)
    assert len(first) == 600
    assert run(kind=kind, seed=11, count=600, start_time=START) == first
    other = run(kind=kind, seed=12, count=600, start_time=START)
    assert sum(a != b for a, b in zip(first, other, strict=True)) > 590
    assert len(set(first)) == len(first)


@pytest.mark.parametrize("kind", KINDS)
def test_a_restart_resumes_at_its_position(kind: str) -> None:
    """A run stopped after 300 records (past a reseed boundary) and run again continues the same sequence."""
    whole = run(kind=kind, seed=5, count=700, start_time=START)
    source = make(kind=kind, seed=5, count=700, start_time=START)
    ctx = synthetic_context(stop_after_emits=300)
    source.run(ctx)
    assert source.position() == 300
    ctx.stop.clear()
    ctx.stop_after_emits = None
    source.run(ctx)
    assert [d for d, _, _ in ctx.emitted] == whole
    assert source.position() is None  # count reached: nothing left to read


def test_skip_hands_back_the_record_and_resumes_after_it() -> None:
    """skip(position) returns that record's exact bytes and origin; the next run starts one later."""
    whole = run(kind="iot", seed=3, count=20, start_time=START)
    source = make(kind="iot", seed=3, count=20, start_time=START)
    skipped = source.skip(7)
    assert skipped is not None and skipped.data == whole[7] and skipped.origin == "synthetic:iot:7"
    ctx = synthetic_context()
    source.run(ctx)
    assert [d for d, _, _ in ctx.emitted] == whole[8:]
    assert source.skip(20) is None and source.skip(-1) is None and source.skip("7") is None


@pytest.mark.parametrize("kind", KINDS)
def test_records_parse_and_map_into_table_items(kind: str) -> None:
    """Each record is one JSON value equal to its event, and the processor maps it into a storable item
    with the generic mapping's default key paths (no GENERIC_* settings)."""
    ctx = synthetic_context()
    make(kind=kind, seed=1, count=500, start_time=START).run(ctx)
    keys = set()
    for data, event, origin in ctx.emitted:
        assert parse_json_record(data, MAX_RECORD_BYTES) == event
        post = map_event(event, GenericPaths())
        item = build_item(post, ARRIVAL, None, 0)
        keys.add((item["Username"]["S"], item["Id"]["S"]))
        assert post.timestamp is not None and post.timestamp >= datetime(2026, 11, 1, 12, tzinfo=UTC)
        assert origin.startswith(f"synthetic:{kind}:")
        if kind == "tweets":
            assert post.source == "x-v2" and post.username == event["includes"]["users"][0]["username"]
        else:
            assert post.source == "generic" and post.message == event["text"]
            assert post.username == event["user_id" if kind == "clickstream" else "device_id"]
    assert len(keys) == 500  # one item each: no two records share a table key


def test_clickstream_sessions_chain_referrers() -> None:
    """Within a session a page view's referrer is the previous page; sessions start from outside the site."""
    events = [json.loads(d) for d in run(kind="clickstream", seed=2, count=64 * 16, start_time=START)]
    by_session: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_session.setdefault(event["session_id"], []).append(event)
    assert len({e["user_id"] for e in events}) > 40
    for visits in by_session.values():
        assert not visits[0]["referrer"].startswith("https://shop.example.com")
        for before, after in itertools.pairwise(visits):
            assert after["user_id"] == before["user_id"] and after["timestamp"] > before["timestamp"]
            if after["event_type"] == "page_view":
                assert after["referrer"] == before["url"]
            else:
                assert after["url"] == before["url"] and after["target"]


def test_iot_readings_drift_plausibly() -> None:
    """A device's readings a minute apart change a little; over days the battery drains and is replaced."""
    kind = build_kind(SyntheticSourceConfig(kind="iot", population=1, rate=1 / 60, start_time=START))
    events = kind.events(0)
    readings = [next(events) for _ in range(60 * 24 * 40)]  # 40 days, one reading a minute
    for before, after in itertools.pairwise(readings):
        assert abs(after["temperature_c"] - before["temperature_c"]) < 1.0
        assert 1.0 <= after["humidity_pct"] <= 99.0 and 5.0 <= after["battery_pct"] <= 100.0
    temperatures = [r["temperature_c"] for r in readings[: 60 * 24]]
    assert max(temperatures) - min(temperatures) > 0.3  # a daily cycle, not a constant
    steps = [b["battery_pct"] - a["battery_pct"] for a, b in itertools.pairwise(readings)]
    assert all(-0.5 < step <= 0 or step > 50 for step in steps)  # drains slowly, or is replaced when low
    assert any(step > 50 for step in steps)


def test_timestamps_follow_start_time_and_rate_or_the_real_clock() -> None:
    """start_time + index / rate when set (1 ms apart at rate 0); otherwise the time of generation."""
    fixed = build_kind(SyntheticSourceConfig(kind="clickstream", rate=4, start_time=START)).events(0)
    assert [next(fixed)["timestamp"] for _ in range(3)] == [
        "2026-11-01T12:00:00.000Z",
        "2026-11-01T12:00:00.250Z",
        "2026-11-01T12:00:00.500Z",
    ]
    naive = build_kind(SyntheticSourceConfig(kind="iot", start_time=datetime(2026, 11, 1, 12))).events(1)
    assert next(naive)["timestamp"] == "2026-11-01T12:00:00.001Z"
    before = datetime.now(UTC) - timedelta(seconds=1)
    live = json.loads(run(kind="tweets", count=1)[0])["data"]["created_at"]
    assert before <= datetime.fromisoformat(live) <= datetime.now(UTC) + timedelta(seconds=1)


def test_count_stops_the_source() -> None:
    """count: N emits exactly N records and returns; count 0 runs until stopped."""
    assert len(run(kind="tweets", count=37)) == 37
    ctx = synthetic_context(stop_after_emits=1000)
    make(kind="iot").run(ctx)
    assert len(ctx.emitted) == 1000


def test_stop_is_noticed_at_rate_0_with_a_full_buffer() -> None:
    """At full speed, a blocked emit that returns False on stop ends run at once (within the stop timeout)."""
    ctx = synthetic_context(block_emits_until_stop=True)
    source = make(kind="tweets")
    thread = threading.Thread(target=source.run, args=(ctx,), daemon=True)
    thread.start()
    assert ctx.emit_blocked.wait(JOIN_TIMEOUT_S)
    stopped_at = time.monotonic()
    ctx.stop.set()
    thread.join(JOIN_TIMEOUT_S)
    assert not thread.is_alive() and time.monotonic() - stopped_at < STOP_NOTICED_S
    assert source.position() == 0  # the refused record was not counted as handed over


def test_stop_is_noticed_while_waiting_for_a_slow_rate() -> None:
    """At one record per 100 s, a stop during the wait for the next slot ends run within a second."""
    ctx = synthetic_context()
    thread = threading.Thread(target=make(kind="iot", rate=0.01).run, args=(ctx,), daemon=True)
    thread.start()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not ctx.emitted and time.monotonic() < deadline:
        ctx.stop.wait(0.01)
    assert len(ctx.emitted) == 1
    stopped_at = time.monotonic()
    ctx.stop.set()
    thread.join(JOIN_TIMEOUT_S)
    assert not thread.is_alive() and time.monotonic() - stopped_at < STOP_NOTICED_S
    assert len(ctx.emitted) == 1


# 1,000 records at 500/s: two seconds. The schedule never runs early, so the lower bound is exact; the upper
# bound allows 5 % for a loaded machine, and burst 125 (0.25 s) lets the schedule absorb descheduling.
PACED_RATE = 500.0
PACED_COUNT = 1000
PACED_TOLERANCE = 0.05


def test_rate_is_held_over_a_window() -> None:
    """Measured with the monotonic clock, 1,000 records at 500/s span 2 s within 5 % (never faster)."""
    ctx = synthetic_context()
    make(kind="tweets", rate=PACED_RATE, count=PACED_COUNT, burst=125).run(ctx)
    span = ctx.emitted_at[-1] - ctx.emitted_at[0]
    ideal = (PACED_COUNT - 1) / PACED_RATE
    assert ideal * (1 - 0.001) <= span <= ideal * (1 + PACED_TOLERANCE), span


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "weather"},
        {"rate": -1},
        {"rate": 1e9},
        {"burst": 10**6},
        {"seed": -1},
        {"count": -5},
        {"population": 10**7},
        {"start_time": "yesterday"},
        {"speed": 3},
    ],
)
def test_bad_config_is_refused(config: dict[str, Any]) -> None:
    """Unknown kinds and keys, negative or absurd numbers and unreadable times fail validation."""
    with pytest.raises(ValidationError):
        SyntheticSourceConfig(**config)


def test_synthetic_tweets_have_the_sample_tweets_shape() -> None:
    """Generated tweets (fast draws) keep the sample's qualities: many languages, unique 19-digit ids,
    the author in includes, hashtags whose offsets point at the tag."""
    tweets = [json.loads(d) for d in run(kind="tweets", seed=9, count=3000, start_time=START)]
    assert len({t["data"]["lang"] for t in tweets}) >= 12
    ids = [t["data"]["id"] for t in tweets]
    assert len(set(ids)) == len(ids) and all(len(i) == 19 and i.isdigit() for i in ids)
    for line in tweets:
        tweet = line["data"]
        assert line["includes"]["users"][0]["id"] == tweet["author_id"]
        tags = tweet.get("entities", {}).get("hashtags", [])
        assert len({t["tag"] for t in tags}) == len(tags)
        for tag in tags:
            assert tweet["text"][tag["start"] : tag["end"]] == "#" + tag["tag"]
