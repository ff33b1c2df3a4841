"""Transforms on a spooled live source through the real daemon: they run before the spool, so filtered records
never take disk and the spool holds the projected bytes that are shipped; the feeder does not transform again."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import poll_until
from tests.daemon.test_kinesis_delivery import INTERNAL_FAILURE, LAND_TIMEOUT_S, start, stop
from tests.daemon.test_spool_daemon import RECORDS, WAIT_S, config_body, fake, metric  # noqa: F401 - fake: the fixture
from tests.fake_kinesis import FakeKinesis

# The IoT generator cycles over 100 devices: reading `seq` of record i is i // 100, so this keeps the last third.
KEPT_FROM_SEQ = 20
KEPT = RECORDS - KEPT_FROM_SEQ * 100
PROJECTED = {"id", "device_id", "seq", "text"}
TRANSFORMS = f"""    transforms:
      - filter: "seq >= `{KEPT_FROM_SEQ}`"
      - fields: [{", ".join(sorted(PROJECTED))}]
      - partition_key: device_id
"""


def body(kinesis: FakeKinesis, second_run: bool = False) -> str:
    text = config_body(kinesis, rate=0).replace("    spool:\n", TRANSFORMS + "    spool:\n", 1)
    if second_run:  # one tweet (no `seq`: filtered out), so every IoT record in the stream came from the spool
        text = text.replace(f"count: {RECORDS}", "count: 1").replace("kind: iot", "kind: tweets")
    return text


def test_filtered_records_never_reach_the_spool_and_spooled_ones_ship_as_projected(
    daemon_factory: Any,
    fake: FakeKinesis,  # noqa: F811 - the fixture
) -> None:
    """While the stream refuses writes, only the kept third is spooled (projected); SIGTERM keeps exactly those;
    the next start ships each once, projected, keyed by device_id, and transforms nothing twice."""
    fake.set_faults(call_failure_rate=1.0, call_failure_status=500, call_failure_code=INTERNAL_FAILURE)
    daemon = start(daemon_factory, body(fake))
    poll_until(lambda: metric(daemon, "tweet_producer_records_received_total") >= RECORDS, WAIT_S, "every record received")
    poll_until(lambda: metric(daemon, "tweet_producer_spool_records") >= KEPT, WAIT_S, "the kept records spooled")
    assert metric(daemon, "tweet_producer_spool_records") == KEPT, "filtered records were spooled"
    assert metric(daemon, "tweet_producer_records_filtered_total") == RECORDS - KEPT
    summary = stop(daemon)
    assert (summary["received"], summary["filtered"], summary["kept"], summary["sent"]) == (RECORDS, RECORDS - KEPT, KEPT, 0)
    assert summary["dead_lettered"] == summary["unsent"] == summary["lost"] == 0

    fake.set_faults(call_failure_rate=0.0)
    again = start(daemon_factory, body(fake, second_run=True))
    assert fake.wait_until(lambda f: len(f.records()) >= KEPT, LAND_TIMEOUT_S), f"{len(fake.records())} stored"
    poll_until(lambda: metric(again, "tweet_producer_spool_records") == 0, WAIT_S, "the spool emptied")
    assert metric(again, "tweet_producer_spool_replayed_records_total") == KEPT
    summary = stop(again)
    assert (summary["received"], summary["sent"], summary["filtered"], summary["kept"]) == (KEPT + 1, KEPT, 1, 0)
    stored = fake.records()
    events = [json.loads(r.data) for r in stored]
    assert len(stored) == KEPT and len({e["id"] for e in events}) == KEPT
    assert all(set(e) == PROJECTED and e["seq"] >= KEPT_FROM_SEQ for e in events)
    assert all(r.partition_key == e["device_id"] for r, e in zip(stored, events, strict=True))
