"""A real daemon process with a mastodon source against the fake server, on the embedded stack: toots land in the table."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import poll_until, table_items
from tests.fake_mastodon import HOLD, TOKEN, FakeMastodon, Plan, sse, status

pytestmark = pytest.mark.slow

LAND_TIMEOUT_S = 60.0
# The daemon joins a source for 5 s; with the sink's flush the whole stop stays well under the test's bound.
EXIT_TIMEOUT_S = 30.0




def test_daemon_streams_toots_into_the_table_and_applies_deletes(tmp_path: Path, daemon_factory: Any) -> None:
    """Statuses from the stream become items, a delete removes its item, garbage is dead-lettered, the token never logged."""
    with FakeMastodon() as fake:
        fake.plan(
            Plan(
                [
                    sse("update", json.dumps(status("101", acct="alice", text="first toot"))),
                    b":thump\n",
                    sse("update", json.dumps(status("102", acct="bob@remote.example", text="to be deleted"))),
                    sse("update", "{garbage"),
                    sse("update", json.dumps(status("103", acct="carol", text="third #toot"))),
                    sse("delete", "102"),
                    HOLD,
                ]
            )
        )
        body = f"""
sources:
  - name: toots
    type: mastodon
    instance: {fake.base_url}
    access_token: ${{MASTODON_TOKEN}}
    stall_timeout: 30
sink:
  type: kinesis
  partition_key: [id]
dead_letter:
  path: dead.jsonl
shutdown:
  flush_deadline: 5s
"""
        daemon = daemon_factory(body).start({"MASTODON_TOKEN": TOKEN})
        daemon.wait_for_event("daemon_started", timeout=60)
        # Four records reach the stream (three statuses and the delete); the processor reports when it has them all.
        poll_until(
            lambda: any(e.get("event") == "processor_caught_up" and e["records_processed"] >= 4 for e in daemon.logs()),
            LAND_TIMEOUT_S,
            "the processor to handle the three statuses and the delete",
            interval=0.5,
        )
        items = table_items(daemon.config_path, tmp_path, {"MASTODON_TOKEN": TOKEN})
        assert sorted((i["Username"], i["Id"], i["Message"]) for i in items) == [
            ("alice", "101", "first toot"),
            ("carol", "103", "third #toot"),
        ]
        assert all(i["Source"] == "mastodon" for i in items)

        started = time.monotonic()
        assert daemon.stop(signal.SIGTERM, timeout=EXIT_TIMEOUT_S) == 0
        assert time.monotonic() - started < EXIT_TIMEOUT_S

    (dead,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text(encoding="utf-8").splitlines()]
    assert (dead["reason"], dead["origin"].startswith("mastodon:127.0.0.1:")) == ("invalid_json", True)
    assert fake.stream_requests()[0].headers["authorization"] == f"Bearer {TOKEN}"
    events = [e.get("event") for e in daemon.logs()]
    assert "source_did_not_stop" not in events  # the source ended within the daemon's 5 s join
    assert "source_connected" in events
    log_text = daemon.stdout_path.read_text(encoding="utf-8", errors="replace")
    assert TOKEN not in log_text
    assert TOKEN not in (tmp_path / "dead.jsonl").read_text(encoding="utf-8")
