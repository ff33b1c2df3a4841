"""Hot reload of the sink (issue 17) through real daemon processes and SIGHUP: moving from one fake stream to
another while a paced source flows ends every line exactly once across the two (the old one holds the first
lines, the new one the rest), and a new sink whose check fails is refused while the old one keeps delivering."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RELOAD_TIMEOUT_S, free_port, poll_until
from tests.daemon.reload_rig import (
    assert_balanced,
    positions,
    reload_body,
    reload_metrics,
    rewrite,
    started_count,
    stored,
    wait_stored,
    write_source,
)
from tests.daemon.test_health import get
from tests.daemon.test_kinesis_delivery import LAND_TIMEOUT_S, start, stop
from tests.fake_kinesis import FakeKinesis

SHARDS = 2
RATE = 300
# Lines in the old stream before the switch, and after a refused switch (the old sink still delivers).
FLOWING = 300
# 30 s of lines at RATE: more than the 20 s a sink check retries a closed port before it gives up.
OUTLASTING_CHECK_LINES = 9000
# How often the liveness test asks /healthz while a reload runs (each answer is quick: it only reads state).
HEALTH_POLL_S = 0.5


@pytest.fixture
def old() -> Iterator[FakeKinesis]:
    """The stream the daemon starts on."""
    with FakeKinesis(SHARDS, stream="reload-old", seed=21) as kinesis:
        yield kinesis
        assert kinesis.stats().internal_errors == ()


@pytest.fixture
def new() -> Iterator[FakeKinesis]:
    """The stream a reload moves the daemon to (another endpoint, another stream name)."""
    with FakeKinesis(SHARDS, stream="reload-new", seed=22) as kinesis:
        yield kinesis
        assert kinesis.stats().internal_errors == ()


@pytest.mark.slow  # 12-20 s: 3,000 lines at 300/s
def test_a_sink_change_drains_the_old_stream_and_the_new_one_takes_every_later_line(
    tmp_path: Path, daemon_factory: Any, old: FakeKinesis, new: FakeKinesis
) -> None:
    """A SIGHUP pointing the sink at another stream while records flow: each line ends exactly once across the
    two streams, the old one takes nothing after the reload and holds exactly the first lines."""
    replay, lines = write_source(tmp_path, "replay", 3000, RATE)
    body = reload_body([replay], old)
    daemon = start(daemon_factory, body)
    wait_stored(old, lines, FLOWING, "replay in the old stream")

    rewrite(daemon, body, reload_body([replay], old, stream=new.stream, endpoint_url=new.url))
    outcome = daemon.reload()
    assert (outcome["event"], outcome["result"], outcome["sink_changed"]) == ("config_reloaded", "success", True), outcome
    in_old_at_switch = positions(old, lines)

    def all_landed() -> bool:
        return stored(old, lines) + stored(new, lines) >= len(lines)

    poll_until(all_landed, LAND_TIMEOUT_S, "every line in one of the two streams")
    summary = stop(daemon)

    in_old, in_new = positions(old, lines), positions(new, lines)
    assert in_old == in_old_at_switch, "the old stream took records after the reload reported the switch"
    switched_at = len(in_old)
    assert 0 < switched_at < len(lines), "the switch did not happen while the file was being read"
    assert in_old == Counter(range(switched_at)), "the old stream does not hold the first lines, once each"
    assert in_new == Counter(range(switched_at, len(lines))), "the new stream does not hold every later line, once each"
    assert len(old.records()) + len(new.records()) == len(lines), "a stream holds something foreign"
    assert_balanced(summary)
    assert (summary["received"], summary["sent"], summary["dead_lettered"]) == (len(lines), len(lines), 0)


FAILING_SINKS = pytest.mark.parametrize("failing", ["closed_port", "missing_stream"])


@pytest.mark.slow  # closed port 30-40 s: its check retries for 20 s before it fails, and the file outlasts it
@FAILING_SINKS
def test_a_new_sink_whose_check_fails_is_refused_and_the_old_one_keeps_delivering(
    tmp_path: Path, daemon_factory: Any, old: FakeKinesis, failing: str
) -> None:
    """A sink change to a closed port or to a stream that does not exist: result failed naming the sink and the
    error, the metrics say so, the source is not restarted and the old stream takes the whole file, once each."""
    replay, lines = write_source(tmp_path, "replay", OUTLASTING_CHECK_LINES if failing == "closed_port" else 3000, RATE)
    body = reload_body([replay], old)
    daemon = start(daemon_factory, body)
    wait_stored(old, lines, FLOWING, "replay in the old stream")
    if failing == "closed_port":
        closed = f"127.0.0.1:{free_port()}"
        stream, endpoint, named = old.stream, f"http://{closed}", closed
    else:
        stream, endpoint, named = "no-such-stream", old.url, "no-such-stream"

    rewrite(daemon, body, reload_body([replay], old, stream=stream, endpoint_url=endpoint))
    outcome = daemon.reload()
    assert (outcome["event"], outcome["result"]) == ("config_reload_failed", "failed"), outcome
    assert outcome["component"] and outcome["error"], outcome
    assert named in f"{outcome['component']} {outcome['error']}", outcome
    figures = reload_metrics(daemon)
    assert (figures["failed"], figures["success"], figures["successful"]) == (1, 0, 0)
    assert stored(old, lines) < len(lines), "the file ended before the refusal: nothing shows the old sink goes on"
    wait_stored(old, lines, len(lines), "the rest of the file in the old stream after the refused reload")
    assert started_count(daemon, "replay") == 1, "a refused sink change restarted the source"
    summary = stop(daemon)
    assert_balanced(summary)
    assert positions(old, lines) == Counter(range(len(lines))) and len(old.records()) == len(lines)
    assert (summary["received"], summary["sent"], summary["dead_lettered"]) == (len(lines), len(lines), 0)


@pytest.mark.slow  # 30-40 s: the closed port's check retries for 20 s
def test_the_daemon_stays_alive_while_a_reload_checks_an_unreachable_new_sink(
    tmp_path: Path, daemon_factory: Any, old: FakeKinesis
) -> None:
    """While a reload waits on a new sink's check against a closed port (20 s of retries), /healthz keeps
    answering 200: the main loop's duties go on through the reload."""
    replay, lines = write_source(tmp_path, "replay", OUTLASTING_CHECK_LINES, RATE)
    body = reload_body([replay], old)
    daemon = start(daemon_factory, body)
    wait_stored(old, lines, FLOWING, "replay in the old stream")
    rewrite(daemon, body, reload_body([replay], old, endpoint_url=f"http://127.0.0.1:{free_port()}"))
    statuses: list[int] = []

    def refused() -> list[dict[str, Any]] | None:
        statuses.append(get(daemon, "/healthz")[0])
        return daemon.events("config_reload_failed") or None

    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    outcome = poll_until(refused, RELOAD_TIMEOUT_S, "the refused reload", interval=HEALTH_POLL_S)[0]
    assert outcome["result"] == "failed", outcome
    assert_balanced(stop(daemon))
    assert set(statuses) == {200}, f"/healthz answered {Counter(statuses)} during the reload"
