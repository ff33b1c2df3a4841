"""Source `x` in a real daemon on the embedded stack: tweets from the fake X land in the table; config.yaml's example loads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_config
from tests.conftest import REPO, poll_until
from tests.fake_x import Close, FakeX, Send, StreamScript, tweet_line

TWEETS = 20
LAND_TIMEOUT_S = 60.0
# The daemon joins its sources for 5 s (daemon/app.py _SOURCE_STOP_TIMEOUT_S).
STOP_TIMEOUT_S = 5.0


@pytest.fixture
def fake() -> Iterator[FakeX]:
    server = FakeX().start()
    yield server
    server.stop()


def test_config_yaml_example_loads_once_uncommented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commented `x` example in config.yaml, uncommented, is a valid source with ${X_BEARER_TOKEN} expanded."""
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    example = re.search(r"^  # - name: x\n(?:  #   .*\n)+", text, re.M)
    assert example is not None, "config.yaml has a commented x example"
    uncommented = re.sub(r"^  # ", "  ", example.group(0), flags=re.M)
    (tmp_path / "config.yaml").write_text(text.replace(example.group(0), uncommented), encoding="utf-8")
    monkeypatch.setenv("X_BEARER_TOKEN", "token-from-the-environment")
    config = load_config(tmp_path / "config.yaml")
    x = next(s for s in config.sources if s.type == "x")
    assert x.bearer_token.get_secret_value() == "token-from-the-environment"  # type: ignore[attr-defined]
    assert [r.value for r in x.rules] == ["cats has:images -is:retweet", "from:XDevelopers"]  # type: ignore[attr-defined]


@pytest.mark.slow
def test_tweets_from_the_x_stream_land_in_the_table(tmp_path: Path, fake: FakeX, daemon_factory: Any) -> None:
    """A daemon with an `x` source on the fake X (api_url): tweets land with handles; prompt SIGTERM stop; no token logged."""
    fake.scripts = [
        StreamScript(
            steps=[
                Send(b"\r\n"),
                Send(b"".join(tweet_line(n, author=str(100 + n), username=f"user{n}") + b"\r\n" for n in range(TWEETS))),
                Send(b"not json\r\n"),
                Close(),
            ]
        )
    ]
    body = f"""
sources:
  - name: x
    type: x
    api_url: {fake.url}
    bearer_token: ${{X_BEARER_TOKEN}}
    rules:
      - {{value: "cats", tag: cats}}
sink:
  type: kinesis
dead_letter:
  path: dead.jsonl
shutdown:
  flush_deadline: 5s
"""
    daemon = daemon_factory(body).start({"X_BEARER_TOKEN": fake.token})
    daemon.wait_for_event("source_connected", timeout=LAND_TIMEOUT_S)
    try:

        def items() -> list[dict[str, Any]] | None:
            out = subprocess.run(
                [sys.executable, "-m", "cli.main", "table", "-c", str(daemon.config_path), "--json"],
                cwd=tmp_path,
                capture_output=True,
                check=True,
                env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "X_BEARER_TOKEN": fake.token},
            )
            found: list[dict[str, Any]] = json.loads(out.stdout)
            return found if len(found) >= TWEETS else None

        landed = poll_until(items, LAND_TIMEOUT_S, "an item per tweet", interval=1.0)
        assert sorted(i["Username"] for i in landed) == sorted(f"user{n}" for n in range(TWEETS))
        dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
        assert [(d["origin"], d["reason"]) for d in dead] == [("x:filtered", "invalid_json")]
        assert fake.rules and fake.rules[0]["value"] == "cats"
        # The first connection closed after its tweets; the source now holds a silent second one.
        poll_until(lambda: len(fake.stream_connects()) >= 2, LAND_TIMEOUT_S, "the reconnect after the close")
    finally:
        assert daemon.stop() == 0
    events = {entry.get("event"): entry for entry in daemon.logs()}
    assert "source_did_not_stop" not in events and events["shutdown_complete"]["seconds"] < STOP_TIMEOUT_S
    assert fake.token not in daemon.stdout_path.read_text()
