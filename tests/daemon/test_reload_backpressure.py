"""A reload that changes a source blocked on a full buffer (the stream refuses writes): the source's waiting record
is not given up while the sink drains, and one abandoned after the stop timeout is read again by its new version -
either way every line lands exactly once."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess, poll_until
from tests.daemon.test_kinesis_delivery import (
    DUMMY_AWS,
    LAND_TIMEOUT_S,
    START_TIMEOUT_S,
    config_body,
    stop,
    tweet_lines,
    write_lines,
)
from tests.fake_kinesis import FakeKinesis

LINES = 400
# With one request of 10 in flight and a buffer of 20, the sink, the worker's chunk and the buffer hold 81 records
# at most (measured); a source that read far fewer than LINES is waiting in emit.
SMALL_SINK = "  in_flight: 1\n  max_batch_records: 10\n"
SMALL_BUFFER = "buffer:\n  max_records: 20\n"
HELD = 60
HELD_AT_MOST = 120
RECEIVED = 'tweet_producer_records_received_total{source="replay"}'
# daemon/source_units.py SOURCE_STOP_TIMEOUT_S plus room for a loaded machine.
ABANDON_TIMEOUT_S = 30.0


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    with FakeKinesis(2, seed=23) as kinesis:
        yield kinesis


def start_blocked(tmp_path: Path, fake: FakeKinesis, daemon_factory: Any) -> tuple[DaemonProcess, list[bytes]]:
    """A daemon whose file source fills the small buffer while every PutRecords call fails."""
    lines = tweet_lines(LINES)
    replay = write_lines(tmp_path / "tweets.jsonl", lines)
    fake.set_faults(call_failure_rate=1.0)
    body = config_body(replay, fake, sink_extra=SMALL_SINK) + SMALL_BUFFER
    daemon: DaemonProcess = daemon_factory(body, embedded=False).start(DUMMY_AWS)
    daemon.wait_for_event("daemon_started", timeout=START_TIMEOUT_S)
    poll_until(lambda: daemon.metrics().get(RECEIVED, 0) >= HELD or None, START_TIMEOUT_S, "the sink and buffer full")
    # Nothing was delivered, and the source cannot have read more than the sink and the buffer hold: it waits in emit.
    assert not fake.user_records() and daemon.metrics()[RECEIVED] <= HELD_AT_MOST
    return daemon, lines


def change_the_source(daemon: DaemonProcess) -> None:
    """Give the source a rate (a changed source: the reload restarts it) and signal the reload."""
    text = daemon.config_path.read_text(encoding="utf-8")
    daemon.config_path.write_text(text.replace("    rate: 0\n", "    rate: 100000\n", 1), encoding="utf-8")
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for_event("config_reload_requested", timeout=START_TIMEOUT_S)


def finish(daemon: DaemonProcess, fake: FakeKinesis, lines: list[bytes]) -> dict[str, Any]:
    reloaded = daemon.wait_for_event("config_reloaded", timeout=LAND_TIMEOUT_S)
    assert reloaded["restarted"] == ["replay"]
    assert fake.wait_until(lambda f: len(f.user_records()) >= LINES, LAND_TIMEOUT_S)
    summary = stop(daemon)
    assert fake.data_counts() == dict.fromkeys(lines, 1)
    return summary


def test_a_source_blocked_on_a_full_buffer_gets_room_as_the_sink_recovers(
    tmp_path: Path, fake: FakeKinesis, daemon_factory: Any
) -> None:
    """The stream heals right after the reload began: the waiting record enters the buffer; no line twice."""
    daemon, lines = start_blocked(tmp_path, fake, daemon_factory)
    change_the_source(daemon)
    fake.set_faults(call_failure_rate=0.0)
    summary = finish(daemon, fake, lines)
    assert summary["kept"] == summary["unsent"] == 0
    assert not [e for e in daemon.logs() if e.get("event") == "source_did_not_stop"]


def test_a_source_abandoned_at_the_stop_is_read_again_by_its_new_version(
    tmp_path: Path, fake: FakeKinesis, daemon_factory: Any
) -> None:
    """The outage outlasts the stop timeout: the waiting record is given up (kept) and the new version reads it."""
    daemon, lines = start_blocked(tmp_path, fake, daemon_factory)
    change_the_source(daemon)
    daemon.wait_for_event("source_did_not_stop", timeout=ABANDON_TIMEOUT_S)
    fake.set_faults(call_failure_rate=0.0)
    summary = finish(daemon, fake, lines)
    assert summary["kept"] == 1  # the given-up record, counted once, then received again from the checkpoint
    assert summary["received"] == LINES + 1 and summary["sent"] == LINES
