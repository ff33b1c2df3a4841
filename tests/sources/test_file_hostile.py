"""A replay file with hostile lines among good tweets, through a real daemon on the embedded stack.

Done when: every good tweet reaches the stream exactly once (byte for byte) and the table once, every
bad line is in the dead-letter file with its reason and `file:line` origin, valid JSON that is no tweet
reaches the stream and then the processor's dead-letter queue, and no source ever crashes.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cli.sample import sample_lines
from embedded.endpoint import embedded_client
from infra.settings import StackSettings
from sources.parsing import MAX_NESTING_DEPTH, UTF8_BOM
from tests.conftest import poll_until, table_items

pytestmark = pytest.mark.slow

GOOD_TWEETS = 400
MAX_LINE_BYTES = 256 * 1024
REGION = "us-east-1"  # the embedded stack's default
STACK = StackSettings()
TIMEOUT_S = 90


def hostile_lines() -> list[tuple[bytes, str]]:
    """Lines the daemon must reject, each with the reason it must give."""
    return [
        (b'{"data": ' * 20_000 + b"1" + b"}" * 20_000, "nesting_too_deep"),  # json's RecursionError: crashed the source
        (b"[" * 200_000, "nesting_too_deep"),
        (b"[" * (MAX_NESTING_DEPTH + 1) + b"]" * (MAX_NESTING_DEPTH + 1), "nesting_too_deep"),
        (b'{"data": {"id": "s1", "text": "lone \\ud800", "author_id": "1"}}', "invalid_unicode"),
        (b'{"data": {"id": "s2", "text": "\\\\ud83d\\udc00", "author_id": "1"}}', "invalid_unicode"),
        (b'{"data": {"\\udfff": 1}}', "invalid_unicode"),
        (b'{"data": {"id": "n1", "text": NaN}}', "invalid_json"),
        (b"[Infinity]", "invalid_json"),
        (b"-Infinity", "invalid_json"),
        (b'{"data": {"id": ' + b"9" * 5000 + b"}}", "number_too_large"),
        (b'{"data": {"text": "nul \x00 inside"}}', "invalid_json"),
        (b"\x00\x00\x00", "invalid_json"),
        (UTF8_BOM + b'{"a": 1}', "invalid_json"),  # a byte-order mark not at the start of the file
        (b'{"t": "\xed\xa0\x80"}', "invalid_utf8"),  # a surrogate encoded as UTF-8 bytes
        (b'{"t": "\xc0\xaf"}', "invalid_utf8"),  # an overlong encoding
        (b'{"t": "\xe2\x82"}', "invalid_utf8"),  # a cut multi-byte character
        (b"\xff\xfe{\x00}\x00", "invalid_utf8"),  # UTF-16
        (b"", "empty_line"),
        (b" \t ", "empty_line"),
        (b"\r", "empty_line"),
        (b'{"data": {"id": "long", "text": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}}', "line_too_long"),
        (b'{"data": {"id": "broken"', "invalid_json"),
        (b'{"a": 1} {"b": 2}', "invalid_json"),
        (b"\x1b[31mred\x1b[0m", "invalid_json"),
    ]


def shipped_but_unstorable() -> list[tuple[bytes, str]]:
    """Valid JSON the daemon ships but the processor cannot store, with the processor's reason."""
    jetstream = {
        "did": "did:plc:x",
        "kind": "commit",
        "commit": {"operation": "create", "collection": "app.bsky.feed.post", "rkey": "r", "record": {"text": "t"}},
    }
    huge_time = json.dumps(jetstream).encode()[:-1] + b', "time_us": 1' + b"0" * 400 + b"}"
    return [
        (b'"just a string"', "unmappable"),
        (b"[1, 2, 3]", "unmappable"),
        (b"1e999", "unmappable"),
        (b'{"errors": [{"title": "operational-disconnect"}]}', "unmappable"),
        (b'{"data": {"id": "' + b"7" * 5000 + b'", "text": "t", "author_id": "1"}}', "key_too_large"),
        (b'{"data": {"id": "z", "text": "t", "author_id": "1", "created_at": "0001-01-01T00:00:00+01:00"}}', "unmappable"),
        (huge_time, "unmappable"),  # time_us beyond a float raised OverflowError in the processor
    ]


def good_lines() -> list[bytes]:
    """Sample tweets, some ASCII-escaped (surrogate pairs for emoji), plus one nested just within the limit."""
    lines = sample_lines(GOOD_TWEETS - 1, seed=5)
    lines = [json.dumps(json.loads(line)).encode() if i % 7 == 3 else line for i, line in enumerate(lines)]
    depth = MAX_NESTING_DEPTH - 2  # the tweet object and `data` are two levels
    deep = b'{"data": {"id": "1861999999999999999", "text": "deep but fine", "author_id": "1", "x": '
    return [*lines, deep + b"[" * depth + b"]" * depth + b"}}"]


def write_replay(path: Path) -> tuple[list[bytes], dict[int, tuple[bytes, str]]]:
    """The file: a BOM, good lines (some ending in CRLF, the last with no newline) with the others among them.

    Returns the bytes each shipped record must have, and the rejected lines by line number.
    """
    good = good_lines()
    others = hostile_lines() + [(line, "shipped") for line, _ in shipped_but_unstorable()]
    step = len(good) // len(others)
    body: list[bytes] = []
    shipped: list[bytes] = []
    rejected: dict[int, tuple[bytes, str]] = {}
    for index, line in enumerate(good):
        body.append(line + (b"\r\n" if index % 11 == 5 else b"\n"))
        shipped.append(line)
        if index % step == 1 and index // step < len(others):
            line, reason = others[index // step]
            body.append(line + b"\n")
            if reason == "shipped":
                shipped.append(line)
            else:
                rejected[len(body)] = (line, reason)
    assert len(rejected) == len(hostile_lines())
    body[0] = UTF8_BOM + body[0]
    body[-1] = body[-1].rstrip(b"\r\n")
    path.write_bytes(b"".join(body))
    return shipped, rejected


def stream_records(endpoint: str) -> list[bytes]:
    """Every record in the stream, oldest first (one shard)."""
    kinesis = embedded_client("kinesis", endpoint, REGION)
    [shard] = kinesis.list_shards(StreamName=STACK.stream_name)["Shards"]
    iterator = kinesis.get_shard_iterator(
        StreamName=STACK.stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[bytes] = []
    while True:
        response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        records.extend(r["Data"] for r in response["Records"])
        if not response["Records"]:
            return records
        iterator = response["NextShardIterator"]


def queued_dead_letters(endpoint: str) -> list[dict[str, Any]]:
    sqs = embedded_client("sqs", endpoint, REGION)
    url = sqs.get_queue_url(QueueName=STACK.dead_letter_queue_name)["QueueUrl"]
    found: list[dict[str, Any]] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600).get("Messages"):
        found.extend(json.loads(m["Body"]) for m in messages)
    return found


def until(condition: Any, what: str) -> Any:
    return poll_until(condition, TIMEOUT_S, what, interval=0.5)


def test_hostile_lines_are_dead_lettered_and_every_good_tweet_arrives_once(tmp_path: Path, daemon_factory: Any) -> None:
    """Poison lines of every kind among good tweets: each good tweet lands once, each bad line is dead-lettered."""
    replay = tmp_path / "hostile.jsonl"
    shipped, rejected = write_replay(replay)
    body = f"""
sources:
  - name: replay
    type: file
    paths: ["{replay}"]
    max_line_bytes: {MAX_LINE_BYTES}
sink:
  type: kinesis
dead_letter:
  path: dead.jsonl
"""
    daemon = daemon_factory(body).start()
    daemon.wait_for_event("all_sources_finished", timeout=TIMEOUT_S)
    endpoint = f"http://127.0.0.1:{daemon.embedded_port}"

    # The stream holds each shipped line exactly once, byte for byte (no BOM, no CR, nothing re-encoded).
    records = until(lambda: (r := stream_records(endpoint)) and len(r) >= len(shipped) and r, "the stream")
    assert Counter(records) == Counter(shipped)

    good_ids = sorted(json.loads(line)["data"]["id"] for line in good_lines())
    items = until(lambda: (i := table_items(daemon.config_path, tmp_path)) and len(i) >= len(good_ids) and i, "the table")
    assert sorted(i["Id"] for i in items) == good_ids
    until(
        lambda: any(e.get("event") == "processor_caught_up" and e["records_processed"] == len(shipped) for e in daemon.logs()),
        "the processor to handle every record",
    )
    queued = queued_dead_letters(endpoint)
    assert sorted((base64.b64decode(d["payloadBase64"]), d["reason"]) for d in queued) == sorted(shipped_but_unstorable())

    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted((d["origin"], d["reason"]) for d in dead) == sorted((f"{replay}:{n}", r) for n, (_, r) in rejected.items())
    for entry in dead:
        line, reason = rejected[int(entry["origin"].rsplit(":", 1)[1])]
        kept = entry["data"].encode("utf-8") if "data" in entry else base64.b64decode(entry["data_base64"])
        expected = line[: MAX_LINE_BYTES + 1] if reason == "line_too_long" else line.rstrip(b"\r")
        assert kept == expected, entry["origin"]
        assert entry["detail"]

    events = daemon.logs()
    assert not [e for e in events if e.get("event") in ("source_crashed", "(not json)")]
    metrics = daemon.metrics()
    assert metrics['tweet_producer_records_received_total{source="replay"}'] == len(shipped) + len(rejected)
    assert metrics['tweet_producer_records_sent_total{sink="kinesis"}'] == len(shipped)
    assert daemon.process.poll() is None, "the daemon must stay up after hostile input"
    assert daemon.stop() == 0
    summary = daemon.wait_for_event("shutdown_complete", timeout=1)
    assert (summary["received"], summary["sent"], summary["dead_lettered"], summary["unsent"]) == (
        len(shipped) + len(rejected),
        len(shipped),
        len(rejected),
        0,
    )
