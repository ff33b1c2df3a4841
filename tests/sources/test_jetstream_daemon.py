"""A real daemon process with a jetstream source against the fake, on the embedded stack: posts land in the table."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import poll_until, table_items
from tests.fake_jetstream import FakeJetstream, Plan, commit_event

pytestmark = pytest.mark.slow

BASE_US = 1_764_000_000_000_000
POSTS = 40
LAND_TIMEOUT_S = 90.0
# The daemon's own stop budget is 5 s for sources plus the sink's flush deadline; exit must come well inside.
EXIT_TIMEOUT_S = 30.0


def config(url: str) -> str:
    return f"""
sources:
  - name: bsky
    type: jetstream
    instances: ["{url}"]
    initial_backoff: 0.1
sink:
  type: kinesis
  partition_key: [did]
dead_letter:
  path: dead.jsonl
shutdown:
  flush_deadline: 5s
"""


def test_daemon_ships_jetstream_posts_to_the_table(tmp_path: Path, daemon_factory: Any) -> None:
    """Posts streamed before and after a server close all land as items; garbage is dead-lettered; SIGTERM exits 0."""
    first = [commit_event(BASE_US + i, f"r{i}", text=f"post {i} 🦋", did=f"did:plc:u{i % 3}") for i in range(POSTS // 2)]
    with FakeJetstream(first) as server:
        server.plans.append(Plan(frames=["{not json"], then="close", close_code=1011))
        daemon = daemon_factory(config(server.url)).start()
        poll_until(lambda: server.connections >= 2, LAND_TIMEOUT_S, "the daemon to reconnect after the close")
        for i in range(POSTS // 2, POSTS):
            server.publish(commit_event(BASE_US + i, f"r{i}", text=f"post {i} 🦋", did=f"did:plc:u{i % 3}"))

        def landed() -> list[dict[str, Any]] | None:
            items = table_items(daemon.config_path, tmp_path)
            return items if len(items) >= POSTS else None

        items = poll_until(landed, LAND_TIMEOUT_S, "an item per post", interval=1.0)
        metrics = daemon.metrics()
        assert metrics['tweet_producer_source_reconnects_total{reason="server_error",source="bsky"}'] == 1
        assert metrics['tweet_producer_source_connected{source="bsky"}'] == 1
        assert daemon.stop(signal.SIGTERM, EXIT_TIMEOUT_S) == 0
    assert sorted((i["Username"], i["Id"]) for i in items) == sorted((f"did:plc:u{n % 3}", f"r{n}") for n in range(POSTS))
    assert {i["Message"] for i in items} == {f"post {n} 🦋" for n in range(POSTS)}
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(d.get("reason"), d.get("origin", "").rsplit(":", 2)[-2:]) for d in dead] == [("invalid_json", ["after", "start"])]
    # The reconnect resumed from the last post handed over, rewound by the default 3 s.
    assert server.queries[1]["cursor"] == [str(BASE_US + POSTS // 2 - 1 - 3_000_000)]
