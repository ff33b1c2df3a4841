"""Transforms through the real daemon: a file source with a filter and a projection into tests/fake_kinesis.py.

Checked where it lands: the stream holds exactly the kept records, projected; the filtered counter and the
shutdown totals match; after a restart with the checkpoint, filtered lines are not read again.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.daemon.test_kinesis_delivery import (
    LAND_TIMEOUT_S,
    config_body,
    dead_letters,
    fake,  # noqa: F401 - the fixture
    start,
    stop,
    write_lines,
)
from tests.daemon.transforms.tweets import line, tweet
from tests.fake_kinesis import FakeKinesis

FIRST_RUN = 300
APPENDED = 60
TAIL_FILTERED = 5
LIKES_AT_LEAST = 5
BROKEN_EVERY = 75  # these fail the projection: dead-lettered as transform_failed
TRANSFORMS = """    transforms:
      - filter: "data.lang == 'ja' && data.public_metrics.like_count > `5`"
      - fields: [data.id, data.text, data.author_id, includes.users, matching_rules]
"""
FILTERED_METRIC = 'tweet_producer_records_filtered_total{source="replay"}'


def lines_from(start_at: int, count: int) -> list[dict[str, Any]]:
    """Tweets where every third is Japanese, every ninth has few likes; the last few are all filtered out (the
    checkpoint must move past them)."""
    events = []
    for n in range(start_at, start_at + count):
        japanese = n % 3 == 0 and n < start_at + count - TAIL_FILTERED
        event = tweet(n % 100, lang="ja" if japanese else "en", likes=3 if n % 9 == 0 else 10, text=f"第{n}回 🎉 مرحبا")
        event["data"]["id"] = str(10**15 + n)
        if n % BROKEN_EVERY == 0 and japanese and n % 9:  # one the filter keeps
            event["includes"] = "not an object"
        events.append(event)
    return events


def broken(event: dict[str, Any]) -> bool:
    """A tweet whose `includes` is a string: it passes the filter, and the projection cannot go into it."""
    return isinstance(event["includes"], str)


def shipped(event: dict[str, Any], lang: str = "ja") -> bytes | None:
    """What the stream must hold for `event` (with the filter on `lang`): its projection in compact UTF-8 JSON, or
    None when filtered out or failing."""
    data = event["data"]
    if broken(event):
        return None
    if data["lang"] != lang or data["public_metrics"]["like_count"] <= LIKES_AT_LEAST:
        return None
    kept = {k: data[k] for k in data if k in ("id", "text", "author_id")}
    return line({"data": kept, "includes": event["includes"], "matching_rules": event["matching_rules"]})


def body(replay: Path, kinesis: FakeKinesis) -> str:
    text = config_body(replay, kinesis)
    return text.replace("    checkpoint: true\n", "    checkpoint: true\n" + TRANSFORMS, 1)


def test_filtered_records_are_counted_projected_and_never_read_again(
    tmp_path: Path,
    daemon_factory: Any,
    fake: FakeKinesis,  # noqa: F811 - the fixture
) -> None:
    """The stream holds exactly the kept tweets, projected byte for byte; filtered = received - sent in the metric
    and the totals; a restart reads only the lines appended since, never the filtered ones before them."""
    first = lines_from(0, FIRST_RUN)
    replay = write_lines(tmp_path / "tweets.jsonl", [line(e) for e in first])
    expected = [b for b in map(shipped, first) if b is not None]
    daemon = start(daemon_factory, body(replay, fake))
    daemon.wait_for_event("all_sources_finished", timeout=LAND_TIMEOUT_S)
    assert fake.wait_for_user_records(len(expected), timeout_s=LAND_TIMEOUT_S)
    metrics = daemon.metrics()
    summary = stop(daemon)

    assert Counter(r.data for r in fake.user_records()) == Counter(expected)
    failing = [e for e in first if broken(e)]
    filtered = FIRST_RUN - len(expected) - len(failing)
    assert metrics[FILTERED_METRIC] == filtered and len(failing) >= 2
    assert (summary["received"], summary["sent"], summary["filtered"]) == (FIRST_RUN, len(expected), filtered)
    assert summary["dead_lettered"] == len(failing)
    assert summary["unsent"] == summary["kept"] == summary["lost"] == 0
    dead = dead_letters(tmp_path)
    assert [d["data"].encode() for d in dead] == [line(e) for e in failing], "the dead letter holds the line as read"
    assert {d["reason"] for d in dead} == {"transform_failed"}
    assert all(d["detail"] == "transforms[1] fields: includes is a string, not an object" for d in dead)

    more = lines_from(FIRST_RUN, APPENDED)
    with replay.open("ab") as out:
        out.write(b"\n".join(line(e) for e in more) + b"\n")
    expected_more = [b for b in map(shipped, more) if b is not None]
    daemon = start(daemon_factory, body(replay, fake))
    daemon.wait_for_event("all_sources_finished", timeout=LAND_TIMEOUT_S)
    assert fake.wait_for_user_records(len(expected) + len(expected_more), timeout_s=LAND_TIMEOUT_S)
    again = stop(daemon)
    assert again["received"] == APPENDED, "the restart read lines the first run had filtered, sent or dead-lettered"
    assert again["dead_lettered"] == sum(map(broken, more)) == 1
    assert again["filtered"] == APPENDED - len(expected_more) - again["dead_lettered"]
    assert Counter(r.data for r in fake.user_records()) == Counter(expected + expected_more)
    assert all(json.loads(r.data)["data"]["text"].startswith("第") for r in fake.user_records())
