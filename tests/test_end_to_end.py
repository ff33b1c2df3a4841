"""The whole pipeline on the embedded stack, as a user runs it: real daemon process, real signals."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.sample import sample_lines
from embedded.stack import EmbeddedStack
from infra.settings import StackSettings
from tests.conftest import poll_until, table_items

pytestmark = pytest.mark.slow

GOOD_TWEETS = 2000
MAX_LINE_BYTES = 4096
MAX_RECORD_BYTES = 3072
# Bounds for outcomes on a loaded 2-core machine; the tests never assert that things are fast.
LAND_TIMEOUT_S = 60.0
READ_TIMEOUT_S = 30.0
GET_RECORDS_LIMIT = 10_000
# The SIGTERM test signals once this many records were sent: mid-replay (at 400/s the file takes ~5 s).
SENT_BEFORE_SIGNAL = 300
SENT_METRIC = 'tweet_producer_records_sent_total{sink="kinesis"}'
EXTERNAL_REGION = "eu-north-1"
# A user's AWS setup, which the embedded stack and the sink writing to it must not use: a profile that exists
# nowhere (boto3 raises ProfileNotFound when it reads it), other keys, an endpoint where nothing listens.
USERS_AWS_ENVIRONMENT = {
    "AWS_PROFILE": "a-profile-that-exists-nowhere",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_ACCESS_KEY_ID": "AKIAUSERSOWNKEY00001",
    "AWS_SECRET_ACCESS_KEY": "users-own-secret",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}


def malformed_lines() -> list[tuple[bytes, str]]:
    """20 bad lines, each with the reason the pipeline must give."""
    over_long = json.dumps({"data": {"id": "x", "text": "y" * (MAX_LINE_BYTES + 10)}}).encode()
    oversize_record = json.dumps({"data": {"id": "big", "text": "é" * 1600, "author_id": "1"}}, ensure_ascii=False).encode()
    assert MAX_RECORD_BYTES < len(oversize_record) < MAX_LINE_BYTES
    return (
        [(b'{"data": {"id": "broken"', "invalid_json")] * 4
        + [(b"not json at all", "invalid_json")]
        + [(b'{"data": {"text": "caf\xe9 \xff"}}', "invalid_utf8")] * 5
        + [(b"", "empty_line")] * 3
        + [(b"   \t", "empty_line")] * 2
        + [(over_long, "line_too_long")] * 3
        + [(oversize_record, "record_too_large")] * 2
    )


def write_replay_file(path: Path) -> tuple[set[str], dict[int, str]]:
    """2,000 good tweets with the 20 bad lines spread among them; returns the good ids and bad line numbers."""
    good = sample_lines(GOOD_TWEETS, seed=7)
    bad = malformed_lines()
    lines: list[bytes] = []
    bad_at: dict[int, str] = {}
    step = GOOD_TWEETS // len(bad)
    for index, line in enumerate(good):
        lines.append(line)
        if index % step == step // 2 and len(bad_at) < len(bad):
            data, reason = bad[len(bad_at)]
            lines.append(data)
            bad_at[len(lines)] = reason
    path.write_bytes(b"\n".join(lines) + b"\n")
    return {json.loads(g)["data"]["id"] for g in good}, bad_at




def config_body(replay: Path, rate: float = 0, sink_extra: str = "", top_extra: str = "") -> str:
    """The replay config; `sink_extra` adds lines to the sink section, `top_extra` top-level sections."""
    return f"""{top_extra}
sources:
  - name: replay
    type: file
    paths: ["{replay}"]
    max_line_bytes: {MAX_LINE_BYTES}
    rate: {rate}
sink:
  type: kinesis
  max_record_bytes: {MAX_RECORD_BYTES}
{sink_extra}dead_letter:
  path: dead.jsonl
shutdown:
  flush_deadline: 5s
"""


def test_replay_lands_one_item_per_good_tweet_and_bad_lines_are_dead_lettered(tmp_path: Path, daemon_factory: Any) -> None:
    """2,000 tweets + 20 malformed lines (a user's AWS_* set): one item per good tweet, each bad line dead-lettered."""
    replay = tmp_path / "tweets.jsonl"
    good_ids, bad_at = write_replay_file(replay)
    daemon = daemon_factory(config_body(replay)).start(USERS_AWS_ENVIRONMENT)
    daemon.wait_for_event("all_sources_finished", timeout=60)

    def all_items() -> list[dict[str, Any]] | None:
        items = table_items(daemon.config_path, tmp_path)
        return items if len(items) >= len(good_ids) else None

    # Each look runs the `table` command (a process start): once a second is enough.
    items = poll_until(all_items, LAND_TIMEOUT_S, "an item per good tweet", interval=1.0)
    assert sorted(i["Id"] for i in items) == sorted(good_ids)
    # The processor tells the user when it has handled everything it read.
    poll_until(
        lambda: any(e.get("event") == "processor_caught_up" and e["records_processed"] == GOOD_TWEETS for e in daemon.logs()),
        10,
        "a processor_caught_up event for every good tweet",
    )
    assert all(i["Message"] and i["Username"] and i["Timestamp"].endswith("Z") for i in items)

    metrics = daemon.metrics()
    assert metrics['tweet_producer_records_received_total{source="replay"}'] == GOOD_TWEETS + len(bad_at)
    assert metrics['tweet_producer_records_sent_total{sink="kinesis"}'] == GOOD_TWEETS
    failed = {k: v for k, v in metrics.items() if k.startswith("tweet_producer_records_failed_total")}
    assert sum(failed.values()) == len(bad_at)

    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted((d["origin"], d["reason"]) for d in dead) == sorted((f"{replay}:{n}", r) for n, r in bad_at.items())

    assert daemon.process.poll() is None, "the daemon must stay up after bad input"
    assert daemon.stop() == 0
    summary = daemon.wait_for_event("shutdown_complete", timeout=1)
    assert (summary["received"], summary["sent"], summary["dead_lettered"], summary["unsent"]) == (
        GOOD_TWEETS + len(bad_at),
        GOOD_TWEETS,
        len(bad_at),
        0,
    )


def stream_data(kinesis: Any, stream_name: str) -> list[bytes]:
    """Every record's data in the stream, read with GetRecords from the start of every shard."""
    found: list[bytes] = []
    for shard in kinesis.list_shards(StreamName=stream_name)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        give_up = time.monotonic() + READ_TIMEOUT_S
        while iterator is not None:
            response = kinesis.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
            found += [record["Data"] for record in response["Records"]]
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break  # caught up with the shard's end
            assert time.monotonic() < give_up, f"reading {shard['ShardId']} did not catch up"
            iterator = response.get("NextShardIterator")
    return found


@pytest.fixture
def external_stack() -> Iterator[EmbeddedStack]:
    """An embedded stack in the test process, so the stream and table outlive the daemon under test."""
    stack = EmbeddedStack(StackSettings(name=f"e2e{uuid.uuid4().hex[:10]}"), "127.0.0.1", 0, EXTERNAL_REGION)
    stack.start()
    yield stack
    stack.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_during_replay_accounts_for_every_record_where_it_landed(
    tmp_path: Path, daemon_factory: Any, external_stack: EmbeddedStack, sig: signal.Signals
) -> None:
    """SIGTERM/SIGINT mid-replay: exit 0 in time; each sent line is in the stream once, every other one read is dead-lettered."""
    replay = tmp_path / "tweets.jsonl"
    write_replay_file(replay)
    lines = replay.read_bytes().split(b"\n")[:-1]  # the file ends with a newline
    line_of = {line: number for number, line in enumerate(lines, start=1)}
    body = config_body(
        replay,
        rate=400,
        sink_extra=f"  endpoint_url: {external_stack.endpoint_url}\n  region: {EXTERNAL_REGION}\n",
        top_extra=f"stack: {external_stack.settings.name}\n",
    )
    key_id, secret = external_stack.credentials
    daemon = daemon_factory(body, embedded=False).start({"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret})
    daemon.wait_for_event("daemon_started", timeout=60)
    # Signal once records are flowing (some sent, most of the file still to read), not after a guessed pause.
    poll_until(lambda: daemon.metrics().get(SENT_METRIC, 0) >= SENT_BEFORE_SIGNAL, 30, f"{SENT_BEFORE_SIGNAL} records sent")
    started = time.monotonic()
    assert daemon.stop(sig, timeout=20) == 0
    assert time.monotonic() - started < 5 + 5  # flush deadline plus process teardown
    summary = daemon.wait_for_event("shutdown_complete", timeout=1)
    received, sent, dead_lettered, unsent = (summary[k] for k in ("received", "sent", "dead_lettered", "unsent"))
    assert 0 < received < len(lines)
    assert received == sent + dead_lettered + unsent

    in_stream = stream_data(external_stack.client("kinesis"), external_stack.settings.stream_name)
    assert len(in_stream) == sent
    stream_lines = Counter(line_of[data] for data in in_stream)  # KeyError: data that is no line of the file
    assert set(stream_lines.values()) <= {1}, "a record reached the stream twice"
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text(encoding="utf-8").splitlines()]
    reasons = Counter("unsent" if d["reason"] == "unsent_at_shutdown" else "dead_lettered" for d in dead)
    assert (reasons["dead_lettered"], reasons["unsent"]) == (dead_lettered, unsent)
    dead_lines = [int(d["origin"].rsplit(":", 1)[1]) for d in dead]
    # The file is read in order: what the daemon received is its first `received` lines (blank ones included),
    # and each of them is either in the stream or in the dead-letter file, never both, never neither.
    assert sorted([*stream_lines, *dead_lines]) == list(range(1, received + 1))

    dynamodb = external_stack.client("dynamodb")

    def ids_in_table() -> list[str] | None:
        pages = dynamodb.get_paginator("scan").paginate(TableName=external_stack.settings.table_name)
        ids = [item["Id"]["S"] for page in pages for item in page["Items"]]
        return ids if len(ids) >= sent else None

    ids = poll_until(ids_in_table, LAND_TIMEOUT_S, "an item for every record in the stream")
    assert sorted(ids) == sorted(json.loads(data)["data"]["id"] for data in in_stream)


def test_a_crashing_source_is_restarted_and_the_others_keep_flowing(tmp_path: Path, daemon_factory: Any) -> None:
    """A source whose files are missing crashes and is restarted with backoff; a healthy source still delivers."""
    replay = tmp_path / "tweets.jsonl"
    replay.write_bytes(b"\n".join(sample_lines(300, seed=3)) + b"\n")
    body = f"""
sources:
  - name: missing
    type: file
    paths: ["{tmp_path}/not-yet-*.jsonl"]
  - name: good
    type: file
    paths: ["{replay}"]
sink:
  type: kinesis
supervision:
  restart_initial_backoff: 100ms
  restart_max_backoff: 200ms
"""
    daemon = daemon_factory(body).start()
    daemon.wait_for_event("source_crashed", timeout=60)

    def restarted_twice_and_all_sent() -> dict[str, float] | None:
        metrics = daemon.metrics()
        restarts = metrics.get('tweet_producer_source_restarts_total{source="missing"}', 0)
        return metrics if restarts >= 2 and metrics.get(SENT_METRIC) == 300 else None

    metrics = poll_until(restarted_twice_and_all_sent, 30, "two restarts of 'missing' and 300 records sent by 'good'")
    assert metrics[SENT_METRIC] == 300
    assert metrics['tweet_producer_source_restarts_total{source="missing"}'] >= 2
    crash = daemon.wait_for_event("source_crashed", timeout=1)
    assert crash["source"] == "missing" and "no file matches" in crash["error"]
    assert daemon.stop() == 0
