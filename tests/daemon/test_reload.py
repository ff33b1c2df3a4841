"""Hot reload (issue 17) through real daemon processes and SIGHUP: the difference applied while records flow,
bad edits refused while the old config keeps running, a restart-only key named and refused, and an unchanged
file changing nothing - each outcome read where it lands: the fake stream, the checkpoint files, the reload
metrics, systemd's notify socket and the final totals."""

from __future__ import annotations

import functools
import re
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess, free_port, poll_until
from tests.daemon.reload_rig import (
    RELOAD_RESULTS,
    assert_balanced,
    checkpoint_offset,
    line_number,
    positions,
    reload_body,
    reload_metrics,
    rewrite,
    started_count,
    stored,
    wait_stored,
    write_source,
)
from tests.daemon.test_kinesis_delivery import DUMMY_AWS, FLUSH_OVERRUN_S, LAND_TIMEOUT_S, START_TIMEOUT_S, start, stop
from tests.daemon.test_notify import NotifySocket
from tests.fake_kinesis import INTERNAL_FAILURE, FakeKinesis

SHARDS = 2
# Each paced source's records/s: slow enough that its file outlasts the reloads, so records flow through them.
RATE = 200
RATE_LINE = f"    rate: {RATE}\n"
# Records that must land before a reload (the sources are flowing) and after it (they still are).
FLOWING = 100
# The state of the reload metrics before any reload: all four results exported at 0, no attempt, "successful".
NO_RELOAD_YET = {**dict.fromkeys(RELOAD_RESULTS, 0.0), "at": 0.0, "successful": 1.0}
# How far MONOTONIC_USEC may lie from this process's monotonic clock at the SIGHUP (the same system clock).
MONOTONIC_SLACK_S = 10.0
# The SIGTERM test: a short flush deadline (the stream refuses everything, so the flush runs out), the refused
# put calls that show records are stuck in flight, and the exit bound: the deadline plus the sources' stop and a
# loaded machine's slack.
STOP_FLUSH_DEADLINE_S = 2.0
REFUSED_CALLS = 3
STOP_TIMEOUT_S = STOP_FLUSH_DEADLINE_S + 30
# A flush deadline a reload lowers: a shutdown that still waited for it would be plain to see.
LONG_FLUSH_DEADLINE_S = 30.0


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    """A seeded 2-shard fake stream; its own defects must stay absent."""
    with FakeKinesis(SHARDS, seed=17) as kinesis:
        yield kinesis
        assert kinesis.stats().internal_errors == ()


def each_once(fake: FakeKinesis, lines: list[bytes]) -> bool:
    """Every one of `lines` is in the stream exactly once."""
    return positions(fake, lines) == Counter(range(len(lines)))


@pytest.mark.slow  # 15-25 s: the kept source replays its 2,400 lines at 200/s
def test_a_reload_while_records_flow_adds_removes_changes_and_keeps_sources(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis
) -> None:
    """One SIGHUP adds, removes, changes (rate) and keeps a source: the removed one's delivered prefix is in the
    stream once with its checkpoint saved after it; re-added by a second SIGHUP it resumes there; every file
    lands once in full and the kept source is never restarted."""
    keep, keep_lines = write_source(tmp_path, "keep", 2400, RATE)
    drop, drop_lines = write_source(tmp_path, "drop", 2400, RATE)
    change, change_lines = write_source(tmp_path, "change", 2400, RATE)
    add, add_lines = write_source(tmp_path, "add", 600, 3 * RATE)
    body = reload_body([keep, drop, change], fake)
    daemon = start(daemon_factory, body)
    for spec, lines in ((keep, keep_lines), (drop, drop_lines), (change, change_lines)):
        wait_stored(fake, lines, FLOWING, spec.name)

    reloaded = reload_body([keep, replace(change, rate=3 * RATE), add], fake)
    rewrite(daemon, body, reloaded)
    outcome = daemon.reload()
    assert outcome["event"] == "config_reloaded" and outcome["result"] == "success", outcome
    lists = {key: outcome[key] for key in ("started", "stopped", "restarted", "unchanged")}
    assert lists == {"started": ["add"], "stopped": ["drop"], "restarted": ["change"], "unchanged": ["keep"]}
    assert outcome["sink_changed"] is False
    removed = positions(fake, drop_lines)
    delivered = len(removed)
    assert 0 < delivered < len(drop_lines), "the removed source was not stopped part-way through its file"
    assert removed == Counter(range(delivered)), "the removed source's delivered lines are not its first ones, once each"
    assert checkpoint_offset(tmp_path, "drop") == sum(len(line) + 1 for line in drop_lines[:delivered])
    wait_stored(fake, change_lines, stored(fake, change_lines) + FLOWING, "change after the reload")
    assert positions(fake, drop_lines) == removed, "the removed source went on delivering"

    # Added again (unpaced now): it starts from the checkpoint its name left.
    rewrite(daemon, reloaded, reload_body([keep, replace(change, rate=3 * RATE), add, replace(drop, rate=0)], fake))
    outcome = daemon.reload()
    assert (outcome["event"], outcome["started"], outcome["stopped"], outcome["restarted"]) == (
        "config_reloaded", ["drop"], [], []
    ), outcome  # fmt: skip
    assert sorted(outcome["unchanged"]) == ["add", "change", "keep"]
    files = ((keep, keep_lines), (change, change_lines), (add, add_lines), (drop, drop_lines))
    for spec, lines in files:
        poll_until(functools.partial(each_once, fake, lines), LAND_TIMEOUT_S, f"every line of {spec.name} once")
    summary = stop(daemon)

    for spec, lines in files:
        assert each_once(fake, lines), f"{spec.name}: a line twice or missing"
    assert started_count(daemon, "keep") == 1, "the unchanged source was restarted"
    assert (started_count(daemon, "change"), started_count(daemon, "add"), started_count(daemon, "drop")) == (2, 1, 2)
    everything = sum(len(lines) for _, lines in files)
    assert sum(fake.data_counts().values()) == everything, "the stream holds something foreign"
    assert_balanced(summary)
    assert (summary["received"], summary["sent"], summary["dead_lettered"]) == (everything, everything, 0)


INVALID_EDITS = pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (f"    rate: {RATE}: 5", "YAML syntax error"),
        (f"    rat: {RATE}", "sources[0].rat: unknown key"),
        ("    rate: -5", "sources[0].rate: "),
    ],
    ids=["yaml_syntax", "unknown_key", "invalid_value"],
)


@INVALID_EDITS
def test_an_invalid_config_is_refused_with_its_line_and_the_old_one_keeps_running(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis, edit: str, problem: str
) -> None:
    """A file that does not load: result invalid naming FILE:LINE: key, records keep landing, the metrics say it
    failed; putting the file right and reloading again succeeds and says so."""
    replay, lines = write_source(tmp_path, "replay", 6000, RATE)
    daemon = start(daemon_factory, reload_body([replay], fake))
    assert reload_metrics(daemon) == NO_RELOAD_YET
    wait_stored(fake, lines, FLOWING, "replay")

    rewrite(daemon, RATE_LINE, edit + "\n")
    line = line_number(daemon, edit)
    outcome = daemon.reload()
    assert (outcome["event"], outcome["result"], outcome["level"]) == ("config_reload_failed", "invalid", "error"), outcome
    pattern = re.compile(rf".*config\.yaml:{line}: {re.escape(problem)}.*")
    assert any(pattern.fullmatch(found) for found in outcome["problems"]), (line, outcome["problems"])
    at_refusal = stored(fake, lines)
    wait_stored(fake, lines, at_refusal + FLOWING, "replay after the refused reload")
    figures = reload_metrics(daemon)
    assert (figures["invalid"], figures["success"], figures["successful"]) == (1, 0, 0)
    assert figures["at"] > 0

    rewrite(daemon, edit + "\n", RATE_LINE)
    outcome = daemon.reload()
    assert (outcome["event"], outcome["result"], outcome["unchanged"]) == ("config_reloaded", "success", ["replay"]), outcome
    figures = reload_metrics(daemon)
    assert (figures["invalid"], figures["success"], figures["successful"]) == (1, 1, 1)
    assert started_count(daemon, "replay") == 1, "the refused reload touched the running source"
    summary = stop(daemon)
    assert_balanced(summary)
    assert positions(fake, lines) == Counter(range(summary["sent"])) and summary["dead_lettered"] == 0


def test_a_changed_metrics_listen_is_refused_as_restart_required_and_the_old_endpoint_still_answers(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis
) -> None:
    """metrics.listen changed: result restart_required naming FILE:LINE: metrics.listen, the old port still serves
    /metrics (counting the refusal), the new one is not opened, records keep landing."""
    replay, lines = write_source(tmp_path, "replay", 6000, RATE)
    daemon = start(daemon_factory, reload_body([replay], fake))
    wait_stored(fake, lines, FLOWING, "replay")
    other = free_port()
    listen = f"  listen: 127.0.0.1:{other}"
    rewrite(daemon, f"  listen: 127.0.0.1:{daemon.metrics_port}\n", listen + "\n")
    line = line_number(daemon, listen)

    outcome = daemon.reload()
    assert (outcome["event"], outcome["result"]) == ("config_reload_failed", "restart_required"), outcome
    expected = re.compile(rf".*config\.yaml:{line}: metrics\.listen: changed; .*restart.*")
    assert any(expected.fullmatch(found) for found in outcome["problems"]), outcome["problems"]
    figures = reload_metrics(daemon)  # from the old port
    assert (figures["restart_required"], figures["success"], figures["successful"]) == (1, 0, 0)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{other}/metrics", timeout=5)
    at_refusal = stored(fake, lines)
    wait_stored(fake, lines, at_refusal + FLOWING, "replay after the refused reload")
    assert started_count(daemon, "replay") == 1
    assert_balanced(stop(daemon))


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.close()


def reloading_message(messages: list[str]) -> int:
    """The index of the one datagram that says RELOADING=1."""
    found = [i for i, message in enumerate(messages) if "RELOADING=1" in message.splitlines()]
    assert len(found) == 1, messages
    return found[0]


def test_a_reload_of_an_unchanged_file_changes_nothing_and_tells_systemd(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis, notify_socket: NotifySocket
) -> None:
    """SIGHUP with the file as it was: success with nothing started, stopped or restarted, the source not
    restarted; systemd gets RELOADING=1 with MONOTONIC_USEC and a STATUS in one datagram, then READY=1; the
    metrics count the success at the time of the SIGHUP."""
    replay, lines = write_source(tmp_path, "replay", 6000, RATE)
    env = {**DUMMY_AWS, "NOTIFY_SOCKET": str(notify_socket.path)}
    daemon: DaemonProcess = daemon_factory(reload_body([replay], fake), embedded=False).start(env)
    poll_until(lambda: "READY=1" in notify_socket.lines(), START_TIMEOUT_S, "READY=1")
    assert reload_metrics(daemon) == NO_RELOAD_YET
    wait_stored(fake, lines, FLOWING, "replay")

    signalled_at, signalled_monotonic = time.time(), time.monotonic()
    outcome = daemon.reload()
    assert (outcome["event"], outcome["result"]) == ("config_reloaded", "success"), outcome
    lists = {key: outcome[key] for key in ("started", "stopped", "restarted", "unchanged")}
    assert lists == {"started": [], "stopped": [], "restarted": [], "unchanged": ["replay"]}
    assert outcome["sink_changed"] is False
    assert [e["signal"] for e in daemon.events("config_reload_requested")] == ["SIGHUP"]

    messages = notify_socket.drain()
    reloading = messages[reloading_message(messages)].splitlines()
    usec = [int(field.removeprefix("MONOTONIC_USEC=")) for field in reloading if field.startswith("MONOTONIC_USEC=")]
    assert len(usec) == 1 and abs(usec[0] / 1e6 - signalled_monotonic) < MONOTONIC_SLACK_S, reloading
    assert any(field.startswith("STATUS=reloading") for field in reloading), reloading

    def ready_again() -> bool:
        messages = notify_socket.drain()
        after = messages[reloading_message(messages) + 1 :]
        return any("READY=1" in m.splitlines() and any(f.startswith("STATUS=") for f in m.splitlines()) for m in after)

    poll_until(ready_again, START_TIMEOUT_S, "READY=1 with a STATUS after the reload")
    figures = reload_metrics(daemon)
    assert figures == {**NO_RELOAD_YET, "success": 1.0, "at": figures["at"]}
    assert signalled_at - 1 <= figures["at"] <= time.time() + 1
    at_reload = stored(fake, lines)
    wait_stored(fake, lines, at_reload + FLOWING, "replay after the reload")
    assert started_count(daemon, "replay") == 1, "an unchanged source was restarted"
    summary = stop(daemon)
    assert_balanced(summary)
    assert positions(fake, lines) == Counter(range(summary["sent"]))


@pytest.mark.slow  # 10-20 s: two daemon runs, the first ending through its flush deadline
def test_a_sigterm_while_a_reload_waits_on_a_changed_source_stops_the_daemon_and_loses_nothing(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis
) -> None:
    """SIGTERM while a reload waits for a changed source's records to settle (the stream refuses every write):
    exit 0, the totals balance with nothing lost or dead-lettered, and the next start completes the file, each
    line once."""
    replay, lines = write_source(tmp_path, "replay", 4000, 2 * RATE)
    body = reload_body([replay], fake, flush_deadline=STOP_FLUSH_DEADLINE_S)
    daemon = start(daemon_factory, body)
    wait_stored(fake, lines, FLOWING, "replay")
    fake.set_faults(call_failure_rate=1.0, call_failure_status=500, call_failure_code=INTERNAL_FAILURE)
    assert fake.wait_until(lambda f: f.stats().injected["call_failure"] >= REFUSED_CALLS, LAND_TIMEOUT_S)
    refusing_from = stored(fake, lines)

    # The changed source's records in flight cannot settle while every write is refused: the reload waits.
    rewrite(daemon, body, reload_body([replace(replay, rate=RATE)], fake, flush_deadline=STOP_FLUSH_DEADLINE_S))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for_event("config_reload_requested", timeout=START_TIMEOUT_S)
    assert daemon.stop(signal.SIGTERM, timeout=STOP_TIMEOUT_S) == 0
    events = [entry["event"] for entry in daemon.logs()]
    assert "shutdown_requested" in events, events[-20:]
    before_sigterm = events[: events.index("shutdown_requested")]
    assert not set(before_sigterm) & {"config_reloaded", "config_reload_failed"}, "the reload ended before the SIGTERM"
    interrupted = daemon.events("config_reload_interrupted")
    assert [entry["stopped"] for entry in interrupted] == [["replay"]], interrupted
    assert not daemon.events("config_reload_failed"), "an interrupted reload is not a refused one"
    summary = daemon.wait_for_event("shutdown_complete", timeout=1)
    assert_balanced(summary)
    assert (summary["lost"], summary["dead_lettered"], summary["unsent"]) == (0, 0, 0), summary
    assert summary["kept"] > 0, "no record was in flight: the reload had nothing to wait for"
    assert stored(fake, lines) == refusing_from == summary["sent"], "the stream took records while refusing every write"

    fake.set_faults(call_failure_rate=0.0)
    again = start(daemon_factory, reload_body([replace(replay, rate=0)], fake))
    poll_until(lambda: stored(fake, lines) >= len(lines), LAND_TIMEOUT_S, "the rest of the file after the restart")
    second = stop(again)
    assert each_once(fake, lines), "a line twice or missing across the two runs"
    assert second["received"] == len(lines) - summary["sent"], "the restart read again what the first run delivered"


def test_a_changed_flush_deadline_applies_without_restarting_anything(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis
) -> None:
    """shutdown.flush_deadline lowered by a reload: success with nothing restarted, and a later SIGTERM while
    the stream refuses every write gives up after the new deadline, not the old one."""
    replay, lines = write_source(tmp_path, "replay", 6000, RATE)
    body = reload_body([replay], fake, flush_deadline=LONG_FLUSH_DEADLINE_S)
    daemon = start(daemon_factory, body)
    wait_stored(fake, lines, FLOWING, "replay")
    rewrite(daemon, body, reload_body([replay], fake, flush_deadline=STOP_FLUSH_DEADLINE_S))
    outcome = daemon.reload()
    assert (outcome["event"], outcome["result"]) == ("config_reloaded", "success"), outcome
    lists = {key: outcome[key] for key in ("started", "stopped", "restarted", "unchanged")}
    assert lists == {"started": [], "stopped": [], "restarted": [], "unchanged": ["replay"]}

    fake.set_faults(call_failure_rate=1.0, call_failure_status=500, call_failure_code=INTERNAL_FAILURE)
    assert fake.wait_until(lambda f: f.stats().injected["call_failure"] >= REFUSED_CALLS, LAND_TIMEOUT_S)
    assert daemon.stop(signal.SIGTERM, timeout=LONG_FLUSH_DEADLINE_S + STOP_TIMEOUT_S) == 0
    summary = daemon.wait_for_event("shutdown_complete", timeout=1)
    assert summary["seconds"] < STOP_FLUSH_DEADLINE_S + FLUSH_OVERRUN_S, "the flush waited for the old deadline"
    assert_balanced(summary)
    assert summary["kept"] > 0 and summary["lost"] == 0, summary
    assert started_count(daemon, "replay") == 1


def test_a_sighup_during_a_reload_causes_one_more_reload_after_it(tmp_path: Path, daemon_factory: Any, fake: FakeKinesis) -> None:
    """A second SIGHUP while a reload waits on a changed source: once the stream takes writes again, the first
    reload restarts the source and one more reload follows, finding nothing to change; no line twice."""
    replay, lines = write_source(tmp_path, "replay", 6000, RATE)
    body = reload_body([replay], fake)
    daemon = start(daemon_factory, body)
    wait_stored(fake, lines, FLOWING, "replay")
    fake.set_faults(call_failure_rate=1.0, call_failure_status=500, call_failure_code=INTERNAL_FAILURE)
    assert fake.wait_until(lambda f: f.stats().injected["call_failure"] >= REFUSED_CALLS, LAND_TIMEOUT_S)
    rewrite(daemon, body, reload_body([replace(replay, rate=2 * RATE)], fake))
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for_event("config_reload_requested", timeout=START_TIMEOUT_S)
    daemon.process.send_signal(signal.SIGHUP)
    fake.set_faults(call_failure_rate=0.0)

    def two_reloads() -> list[dict[str, Any]] | None:
        found = daemon.events("config_reloaded")
        return found if len(found) >= 2 else None

    outcomes = poll_until(two_reloads, LAND_TIMEOUT_S, "two reloads")
    assert (outcomes[0]["restarted"], outcomes[1]["restarted"]) == (["replay"], []), outcomes
    assert outcomes[1]["unchanged"] == ["replay"] and daemon.events("config_reload_failed") == []
    at_second = stored(fake, lines)
    wait_stored(fake, lines, at_second + FLOWING, "replay after both reloads")
    summary = stop(daemon)
    assert len(daemon.events("config_reloaded")) == 2, "more than one reload followed the second SIGHUP"
    assert_balanced(summary)
    assert positions(fake, lines) == Counter(range(summary["sent"])) and summary["dead_lettered"] == 0
