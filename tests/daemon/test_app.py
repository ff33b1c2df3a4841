"""The daemon process: refuses to start cleanly when a part cannot start, and never hangs doing so."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

BODY = """
sources:
  - type: file
    paths: ["{replay}"]
sink:
  type: kinesis
"""


@pytest.mark.parametrize("taken", ["metrics", "embedded"])
def test_taken_port_fails_startup_with_exit_1(tmp_path: Path, daemon_factory: Any, taken: str) -> None:
    """When the metrics or embedded address is taken, the daemon logs startup_failed naming it and exits 1."""
    replay = tmp_path / "t.jsonl"
    replay.write_text('{"data": {"id": "1", "text": "x", "author_id": "2"}}\n', encoding="utf-8")
    daemon = daemon_factory(BODY.format(replay=replay))
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", daemon.metrics_port if taken == "metrics" else daemon.embedded_port))
        blocker.listen()
        daemon.start()
        assert daemon.process.wait(60) == 1
    failure = daemon.wait_for_event("startup_failed", timeout=1)
    port = daemon.metrics_port if taken == "metrics" else daemon.embedded_port
    assert str(port) in failure["component"] + failure["error"]
