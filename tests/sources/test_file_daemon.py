"""The file source in a real daemon: a followed CSV file grows and rotates, rows land in the table, stop is prompt."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import poll_until, table_items

TIMEOUT_S = 60.0
# The daemon joins each source for 5 s (daemon/app.py _SOURCE_STOP_TIMEOUT_S), then flushes; a follower idle
# at the end of its file must not be what makes shutdown slow.
STOP_WITHIN_S = 10.0
HEADER = b"data.id,data.text,data.author_id\n"


def rows(*ids: int) -> bytes:
    return b"".join(f'{n},"tweet {n}, from csv",7\n'.encode() for n in ids)


@pytest.mark.slow
def test_a_followed_csv_file_reaches_the_table_through_rotation_and_stops_promptly(
    tmp_path: Path, daemon_factory: Any
) -> None:
    """Rows written before start, appended later and written to the file that replaced the rotated one all land
    in the table once, keyed by their data.id; SIGTERM while following exits 0 within the stop timeout."""
    live = tmp_path / "live.csv"
    live.write_bytes(HEADER + rows(1, 2))
    body = f"""
sources:
  - name: live
    type: file
    format: csv
    follow: true
    poll_interval: 0.05
    paths: ["{live}"]
sink:
  type: kinesis
dead_letter:
  path: dead.jsonl
"""
    daemon = daemon_factory(body).start()
    daemon.wait_for_event("daemon_started", timeout=TIMEOUT_S)

    def ids() -> list[str]:
        return sorted(item["Id"] for item in table_items(daemon.config_path, tmp_path))

    poll_until(lambda: ids() == ["1", "2"], TIMEOUT_S, "rows 1-2 in the table", interval=0.5)
    with live.open("ab") as handle:
        handle.write(rows(3))
    os.rename(live, tmp_path / "live.csv.1")
    live.write_bytes(HEADER + rows(4))
    poll_until(lambda: ids() == ["1", "2", "3", "4"], TIMEOUT_S, "rows 3-4 in the table", interval=0.5)
    assert not (tmp_path / "dead.jsonl").exists() or (tmp_path / "dead.jsonl").read_text(encoding="utf-8") == ""

    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < STOP_WITHIN_S
    summary = daemon.wait_for_event("shutdown_complete", timeout=1)
    assert (summary["received"], summary["sent"], summary["dead_lettered"]) == (4, 4, 0)
