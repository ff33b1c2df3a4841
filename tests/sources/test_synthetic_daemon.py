"""A real daemon process with synthetic sources on the embedded stack: every generated record becomes an item."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sources.synthetic import SyntheticSourceConfig, build_kind
from tests.conftest import poll_until, table_items

pytestmark = pytest.mark.slow

COUNT = 500
START = "2026-11-01T12:00:00Z"
KINDS = ("tweets", "clickstream", "iot")
# Bounds for outcomes on a loaded 2-core machine; the test never asserts that things are fast.
FINISH_TIMEOUT_S = 90.0
LAND_TIMEOUT_S = 90.0


def expected_keys(kind: str, seed: int) -> set[tuple[str, str]]:
    """The (Username, Id) of each record the source will generate, from the generator itself."""
    generator = build_kind(SyntheticSourceConfig(kind=kind, seed=seed, count=COUNT, start_time=START))  # type: ignore[arg-type]
    keys = set()
    for event, _ in zip(generator.events(0), range(COUNT), strict=False):
        if kind == "tweets":
            keys.add((event["includes"]["users"][0]["username"], event["data"]["id"]))
        else:
            keys.add((event["username"], event["id"]))
    return keys




def test_synthetic_sources_land_one_item_per_record(tmp_path: Path, daemon_factory: Any) -> None:
    """Three synthetic sources (tweets, clickstream, iot; count 500 each) finish, and the table holds
    exactly their 1,500 records: the processor maps every kind with its default settings."""
    sources = "".join(
        f"  - name: gen-{kind}\n    type: synthetic\n    kind: {kind}\n    seed: {seed}\n    count: {COUNT}\n"
        f"    start_time: {START}\n"
        for seed, kind in enumerate(KINDS)
    )
    body = f"sources:\n{sources}sink:\n  type: kinesis\ndead_letter:\n  path: dead.jsonl\nshutdown:\n  flush_deadline: 5s\n"
    daemon = daemon_factory(body).start()
    daemon.wait_for_event("all_sources_finished", timeout=FINISH_TIMEOUT_S)
    wanted = {key for seed, kind in enumerate(KINDS) for key in expected_keys(kind, seed)}
    assert len(wanted) == COUNT * len(KINDS)

    def landed() -> list[dict[str, Any]] | None:
        items = table_items(daemon.config_path, tmp_path)
        return items if len(items) >= len(wanted) else None

    # Each look runs the `table` command (a process start): once a second is enough.
    items = poll_until(landed, LAND_TIMEOUT_S, f"{len(wanted)} items", interval=1.0)
    assert {(i["Username"], i["Id"]) for i in items} == wanted
    assert len(items) == len(wanted)
    by_source = {s: sum(i["Source"] == s for i in items) for s in ("x-v2", "generic")}
    assert by_source == {"x-v2": COUNT, "generic": 2 * COUNT}
    assert all(i["Timestamp"].startswith("2026-11-01T12:") for i in items)
    metrics = daemon.metrics()
    for kind in KINDS:
        assert metrics[f'tweet_producer_records_received_total{{source="gen-{kind}"}}'] == COUNT
    assert daemon.stop() == 0
    assert not (tmp_path / "dead.jsonl").exists() or not (tmp_path / "dead.jsonl").read_text().strip()
