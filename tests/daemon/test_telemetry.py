"""Telemetry: dead letters are all counted, but logged one line per source and reason and interval."""

from __future__ import annotations

from structlog.testing import capture_logs

from daemon.telemetry import Telemetry


def test_a_flood_of_dead_letters_is_counted_in_full_and_logged_once_per_reason() -> None:
    """1,000 bad lines of one reason give 1,000 in the counter and ledger but one log line; another reason logs too."""
    telemetry = Telemetry("kinesis")
    with capture_logs() as logs:
        for n in range(1000):
            telemetry.record_dead_lettered("replay", f"f:{n}", "invalid_json", "bad")
        telemetry.record_dead_lettered("replay", "f:1001", "empty_line", "empty line")
    lines = [e for e in logs if e["event"] == "record_dead_lettered"]
    assert [(e["origin"], e["reason"]) for e in lines] == [("f:0", "invalid_json"), ("f:1001", "empty_line")]
    counted = telemetry.failed.labels(source="replay", sink="kinesis", reason="invalid_json")._value.get()
    assert counted == 1000 and telemetry.ledger.totals()["dead_lettered"] == 1001


def test_live_source_events_set_the_connection_gauge_count_reconnects_and_stamp_the_last_event() -> None:
    """connection() drives source_connected, reconnecting() counts by reason (logged once per interval), emit stamps time."""
    telemetry = Telemetry("kinesis")
    with capture_logs() as logs:
        telemetry.source_connection("x", True, "api.x.com")
        for _ in range(3):
            telemetry.source_reconnecting("x", "stall", 0.25, "no data for 21 s")
        telemetry.source_connection("x", False, "stall")
        telemetry.record_received("x")
    assert telemetry.source_connected.labels(source="x")._value.get() == 0
    assert telemetry.source_reconnects.labels(source="x", reason="stall")._value.get() == 3
    assert [e["event"] for e in logs] == ["source_connected", "source_reconnecting", "source_disconnected"]
    stamp = telemetry.registry.get_sample_value("tweet_producer_source_last_event_timestamp_seconds", {"source": "x"})
    assert stamp is not None and stamp > 1.7e9


def test_the_attempts_histogram_takes_counts_per_batch_and_exposes_cumulative_buckets() -> None:
    """records_settled adds a batch of (attempts -> records) at once; a scrape shows cumulative buckets, count and sum."""
    telemetry = Telemetry("kinesis")
    telemetry.records_settled(attempts={1: 500, 3: 2})
    telemetry.records_settled(attempts={1: 10, 60: 1})
    sample = telemetry.registry.get_sample_value
    labels = {"sink": "kinesis"}
    assert sample("tweet_producer_sink_record_attempts_bucket", {**labels, "le": "1.0"}) == 510
    assert sample("tweet_producer_sink_record_attempts_bucket", {**labels, "le": "3.0"}) == 512
    assert sample("tweet_producer_sink_record_attempts_bucket", {**labels, "le": "50.0"}) == 512
    assert sample("tweet_producer_sink_record_attempts_bucket", {**labels, "le": "+Inf"}) == 513
    assert sample("tweet_producer_sink_record_attempts_count", labels) == 513
    assert sample("tweet_producer_sink_record_attempts_sum", labels) == 500 + 6 + 10 + 60


def test_a_removed_source_leaves_no_connection_state_to_alert_on() -> None:
    """After a reload removes a disconnected live source, neither the gauge nor /readyz's states name it; others stay."""
    telemetry = Telemetry("kinesis")
    telemetry.source_connection("gone", False, "stopped")
    telemetry.source_connection("kept", True, "api.x.com")
    telemetry.source_removed("gone")
    telemetry.source_removed("never-connected")  # a file source: nothing to forget, no error
    assert telemetry.registry.get_sample_value("tweet_producer_source_connected", {"source": "gone"}) is None
    assert telemetry.registry.get_sample_value("tweet_producer_source_connected", {"source": "kept"}) == 1
    assert telemetry.connections == {"kept": True}
