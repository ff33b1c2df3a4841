"""The whole pipeline on the embedded stack, as a user runs it: real daemon process, real signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cli.sample import sample_lines
from tests.conftest import REPO

pytestmark = pytest.mark.slow

GOOD_TWEETS = 2000
MAX_LINE_BYTES = 4096
MAX_RECORD_BYTES = 3072


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


def table_items(config: Path, cwd: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "table", "-c", str(config), "--json"],
        cwd=cwd,
        capture_output=True,
        check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)
    return items


def config_body(replay: Path, rate: float = 0) -> str:
    return f"""
sources:
  - name: replay
    type: file
    paths: ["{replay}"]
    max_line_bytes: {MAX_LINE_BYTES}
    rate: {rate}
sink:
  type: kinesis
  max_record_bytes: {MAX_RECORD_BYTES}
dead_letter:
  path: dead.jsonl
shutdown:
  flush_deadline: 5s
"""


def test_replay_lands_one_item_per_good_tweet_and_bad_lines_are_dead_lettered(tmp_path: Path, daemon_factory: Any) -> None:
    """2,000 tweets + 20 malformed lines: one item per good tweet, each bad line dead-lettered and counted."""
    replay = tmp_path / "tweets.jsonl"
    good_ids, bad_at = write_replay_file(replay)
    daemon = daemon_factory(config_body(replay)).start()
    daemon.wait_for_event("all_sources_finished", timeout=60)

    give_up = time.monotonic() + 60
    items: list[dict[str, Any]] = []
    while time.monotonic() < give_up:
        items = table_items(daemon.config_path, tmp_path)
        if len(items) >= len(good_ids):
            break
        time.sleep(1)
    assert sorted(i["Id"] for i in items) == sorted(good_ids)
    give_up = time.monotonic() + 10  # the processor tells the user when it has handled everything it read
    while not any(e.get("event") == "processor_caught_up" and e["records_processed"] == GOOD_TWEETS for e in daemon.logs()):
        assert time.monotonic() < give_up, "no processor_caught_up event for every good tweet"
        time.sleep(0.2)
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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_during_replay_accounts_for_every_record(tmp_path: Path, daemon_factory: Any, sig: signal.Signals) -> None:
    """SIGTERM or SIGINT mid-replay: exit 0 within the deadline; received = sent + dead-lettered + unsent."""
    replay = tmp_path / "tweets.jsonl"
    write_replay_file(replay)
    daemon = daemon_factory(config_body(replay, rate=400)).start()
    daemon.wait_for_event("daemon_started", timeout=60)
    time.sleep(1.5)
    started = time.monotonic()
    assert daemon.stop(sig, timeout=20) == 0
    assert time.monotonic() - started < 5 + 5  # flush deadline plus process teardown
    summary = daemon.wait_for_event("shutdown_complete", timeout=1)
    assert 0 < summary["received"] < GOOD_TWEETS
    assert summary["received"] == summary["sent"] + summary["dead_lettered"] + summary["unsent"]


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
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        metrics = daemon.metrics()
        if (
            metrics.get('tweet_producer_source_restarts_total{source="missing"}', 0) >= 2
            and metrics.get('tweet_producer_records_sent_total{sink="kinesis"}') == 300
        ):
            break
        time.sleep(0.2)
    assert metrics['tweet_producer_records_sent_total{sink="kinesis"}'] == 300
    assert metrics['tweet_producer_source_restarts_total{source="missing"}'] >= 2
    crash = daemon.wait_for_event("source_crashed", timeout=1)
    assert crash["source"] == "missing" and "no file matches" in crash["error"]
    assert daemon.stop() == 0
