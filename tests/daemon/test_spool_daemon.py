"""A spooled live source through the real daemon: records go to disk before they count, wait there while the
stream refuses writes, stay there over a SIGTERM (kept, not dead-lettered), and the next start sends them first,
each exactly once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import poll_until
from tests.daemon.test_kinesis_delivery import FAST_RETRY, INTERNAL_FAILURE, LAND_TIMEOUT_S, UNLIMITED_SHARDS, start, stop
from tests.fake_kinesis import FakeKinesis

RECORDS = 3000
SEED = 5
WAIT_S = 60.0


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    with FakeKinesis(2, seed=16) as kinesis:
        yield kinesis
        assert kinesis.stats().internal_errors == ()


def config_body(fake: FakeKinesis, rate: float) -> str:
    return f"""
sources:
  - name: live
    type: synthetic
    kind: iot
    seed: {SEED}
    count: {RECORDS}
    rate: {rate}
    spool:
      enabled: true
state:
  checkpoint_interval: 0.1s
sink:
  type: kinesis
  stream: {fake.stream}
  endpoint_url: {fake.url}
  region: us-east-1
  linger: 0.01
{FAST_RETRY}{UNLIMITED_SHARDS}dead_letter:
  path: dead.jsonl
shutdown:
  flush_deadline: 1s
"""


def metric(daemon: Any, name: str) -> float:
    return sum(value for key, value in daemon.metrics().items() if key.startswith(name + "{") or key == name)


@pytest.mark.slow
def test_records_spooled_while_the_stream_is_down_survive_sigterm_and_are_sent_first_at_the_next_start(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis
) -> None:
    """The stream refuses every write: the source still hands over every record (into the spool, not blocked by
    the sink); SIGTERM keeps them (in the spool, not the dead-letter file); the next start sends them, and each of
    the source's records is in the stream exactly once."""
    fake.set_faults(call_failure_rate=1.0, call_failure_status=500, call_failure_code=INTERNAL_FAILURE)
    daemon = start(daemon_factory, config_body(fake, rate=0))
    poll_until(lambda: metric(daemon, "tweet_producer_spool_records") >= RECORDS, WAIT_S, "every record spooled")
    assert metric(daemon, "tweet_producer_records_received_total") == RECORDS
    assert fake.records() == []
    summary = stop(daemon)
    assert summary["received"] == RECORDS and summary["sent"] == 0
    assert summary["kept"] == RECORDS and summary["unsent"] == 0 and summary["dead_lettered"] == 0
    assert not (tmp_path / "dead.jsonl").exists() or (tmp_path / "dead.jsonl").read_text() == ""

    fake.set_faults(call_failure_rate=0.0)
    # The second start generates one tweet, not IoT records: every IoT record in the stream came from the spool.
    body = config_body(fake, rate=0).replace(f"count: {RECORDS}", "count: 1").replace("kind: iot", "kind: tweets")
    again = start(daemon_factory, body)
    assert fake.wait_until(lambda f: len(f.records()) >= RECORDS + 1, LAND_TIMEOUT_S), f"{len(fake.records())} stored"
    poll_until(lambda: metric(again, "tweet_producer_spool_records") == 0, WAIT_S, "the spool emptied")
    assert metric(again, "tweet_producer_spool_replayed_records_total") == RECORDS
    summary = stop(again)
    assert summary["received"] == RECORDS + 1 and summary["sent"] == RECORDS + 1 and summary["kept"] == 0
    stored = fake.records()
    assert len(stored) == RECORDS + 1, "a record was stored twice"
    kinds = Counter("device_id" in json.loads(r.data) for r in stored)
    assert kinds == {True: RECORDS, False: 1}
