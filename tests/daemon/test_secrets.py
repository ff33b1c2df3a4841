"""Logs for journald are one JSON event per line, and no secret - an X bearer token from the environment
through the config, an AWS secret key in the environment - appears in them, in /metrics, in the dead-letter
file or in the state directory, also while the stream refuses writes and bad input is dead-lettered."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.test_kinesis_delivery import FAST_RETRY, START_TIMEOUT_S
from tests.fake_kinesis import FakeKinesis
from tests.fake_x import FakeX, Send, StreamScript, tweet_line

TWEETS = 30
WAIT_S = 60.0
AWS_SECRET = "aws-secret-key-that-must-never-show-0123456789"  # noqa: S105 - a dummy, looked for in the outputs
DENIED = "AccessDeniedException"


@pytest.fixture
def fake_x() -> Iterator[FakeX]:
    server = FakeX().start()
    yield server
    server.stop()


@pytest.mark.slow
def test_no_secret_reaches_the_logs_metrics_dead_letters_or_state(
    tmp_path: Path, daemon_factory: Any, fake_x: FakeX
) -> None:
    """Tweets flow, a bad line is dead-lettered, the stream refuses every write for a while then takes them:
    every stdout line is one JSON object, and neither secret is anywhere the daemon wrote."""
    fake_x.scripts = [
        StreamScript(
            steps=[
                Send(b"".join(tweet_line(n, author=str(100 + n), username=f"user{n}") + b"\r\n" for n in range(TWEETS))),
                Send(b"not json\r\n"),
            ]
        )
    ]
    with FakeKinesis(1, seed=19) as kinesis:
        kinesis.set_faults(call_failure_rate=1.0, call_failure_status=400, call_failure_code=DENIED)
        body = f"""
sources:
  - name: x
    type: x
    api_url: {fake_x.url}
    bearer_token: ${{X_BEARER_TOKEN}}
    rules:
      - {{value: "cats", tag: cats}}
sink:
  type: kinesis
  stream: {kinesis.stream}
  endpoint_url: {kinesis.url}
  region: us-east-1
  linger: 0.01
{FAST_RETRY}dead_letter:
  path: dead.jsonl
shutdown:
  flush_deadline: 1s
"""
        env = {"AWS_ACCESS_KEY_ID": "AKIAFAKEKINESIS00002", "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "X_BEARER_TOKEN": fake_x.token}
        daemon = daemon_factory(body, embedded=False).start(env)
        daemon.wait_for_event("daemon_started", timeout=START_TIMEOUT_S)
        daemon.wait_for_event("sink_unhealthy", timeout=WAIT_S)
        kinesis.set_faults(call_failure_rate=0.0)
        assert kinesis.wait_until(lambda f: len(f.records()) >= TWEETS, WAIT_S), "the tweets did not land"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{daemon.metrics_port}/metrics", timeout=5).read().decode()
        assert daemon.stop() == 0

    logs = daemon.stdout_path.read_text(encoding="utf-8")
    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines and all(isinstance(json.loads(line), dict) for line in lines), "a log line that is not one JSON event"
    events = {json.loads(line).get("event") for line in lines}
    assert {"daemon_started", "sink_unhealthy", "record_dead_lettered", "shutdown_complete"} <= events
    written = [logs, metrics] + [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and "state" in p.parts]
    dead = (tmp_path / "dead.jsonl").read_text(encoding="utf-8")
    assert json.loads(dead.splitlines()[0])["reason"] == "invalid_json"
    for text in [*written, dead]:
        assert AWS_SECRET not in text
        assert fake_x.token not in text
