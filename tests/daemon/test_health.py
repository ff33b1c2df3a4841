"""`/healthz` and `/readyz`: liveness follows the main loop, the sink worker and fatal errors; readiness also
the start-up, the sink's health and each source's connection - through a real daemon's metrics port too."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon.health import MAIN_LOOP_STALL_S, Health
from tests.conftest import poll_until
from tests.daemon.test_kinesis_delivery import START_TIMEOUT_S, config_body, start, stop, tweet_lines, write_lines
from tests.fake_kinesis import FakeKinesis

WAIT_S = 30.0
DENIED = "AccessDeniedException"


@dataclass
class FakeThread:
    alive: bool = True

    def is_alive(self) -> bool:
        return self.alive


@dataclass
class FakeSupervisor:
    thread: Any = field(default_factory=FakeThread)
    ended_cleanly: threading.Event = field(default_factory=threading.Event)


class Rig:
    def __init__(self) -> None:
        self.now = 100.0
        self.connections: dict[str, bool] = {}
        self.unhealthy: str | None = None
        self.failed: list[str] = []
        self.worker = FakeThread()
        self.supervisors = {"file": FakeSupervisor(), "x": FakeSupervisor()}
        self.health = Health(lambda: dict(self.connections), clock=lambda: self.now)
        self.health.attach(self.worker, self.supervisors.items(), lambda: self.unhealthy, lambda: list(self.failed))  # type: ignore[arg-type]
        self.health.tick()
        self.health.state = "serving"


def test_a_serving_daemon_is_alive_and_ready() -> None:
    """Main loop ticking, worker alive, sink healthy, sources running: 200 on both, with the checks listed."""
    rig = Rig()
    assert rig.health.liveness()[0] and rig.health.readiness()[0]
    _, body = rig.health.readiness()
    assert body["status"] == "ready" and set(body["checks"]["sources"]["each"]) == {"file", "x"}


def test_a_stalled_main_loop_or_a_dead_worker_or_a_fatal_error_is_not_alive() -> None:
    """Each of the three makes liveness fail and names itself in the body."""
    rig = Rig()
    rig.now += MAIN_LOOP_STALL_S + 1
    alive, body = rig.health.liveness()
    assert not alive and not body["checks"]["main_loop"]["ok"]
    rig.health.tick()
    rig.worker.alive = False
    alive, body = rig.health.liveness()
    assert not alive and body["checks"]["sink_worker"] == {"ok": False, "alive": False}
    rig.worker.alive = True
    rig.failed.append("dead_letter_file")
    alive, body = rig.health.liveness()
    assert not alive and body["checks"]["fatal"]["components"] == ["dead_letter_file"]


def test_readiness_needs_a_healthy_sink_connected_sources_and_serving() -> None:
    """An unhealthy sink, a disconnected live source, a source that died, start-up or shutdown: not ready, and
    the body says which; a source that finished is fine."""
    rig = Rig()
    rig.unhealthy = DENIED
    ready, body = rig.health.readiness()
    assert not ready and body["checks"]["sink"]["unhealthy_reason"] == DENIED
    rig.unhealthy = None
    rig.connections["x"] = False
    ready, body = rig.health.readiness()
    assert not ready and body["checks"]["sources"]["each"]["x"]["state"] == "disconnected"
    rig.connections["x"] = True
    rig.supervisors["file"].thread.alive = False
    assert not rig.health.readiness()[0]
    rig.supervisors["file"].ended_cleanly.set()
    ready, body = rig.health.readiness()
    assert ready and body["checks"]["sources"]["each"]["file"]["state"] == "finished"
    rig.health.state = "stopping"
    assert not rig.health.readiness()[0] and rig.health.liveness()[0]


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    with FakeKinesis(1, seed=17) as kinesis:
        yield kinesis


def get(daemon: Any, path: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{daemon.metrics_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        with error:
            status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        raise AssertionError(raw) from None


@pytest.mark.slow
def test_a_real_daemon_answers_health_and_readiness_on_its_metrics_port(
    tmp_path: Path, daemon_factory: Any, fake: FakeKinesis
) -> None:
    """/healthz 200 while it runs; /readyz 200, then 503 naming the sink while the stream refuses every write,
    then 200 again once it takes them; /metrics is still served on the same port."""
    replay = write_lines(tmp_path / "tweets.jsonl", tweet_lines(20_000))
    body = config_body(replay, fake, rate=200, flush_deadline=1.0)
    daemon = start(daemon_factory, body)
    assert get(daemon, "/healthz")[0] == 200
    poll_until(lambda: get(daemon, "/readyz")[0] == 200, START_TIMEOUT_S, "ready")
    fake.set_faults(call_failure_rate=1.0, call_failure_status=400, call_failure_code=DENIED)
    poll_until(lambda: get(daemon, "/readyz")[0] == 503, WAIT_S, "not ready while the stream refuses")
    status, report = get(daemon, "/readyz")
    assert status == 503 and report["checks"]["sink"]["unhealthy_reason"] == DENIED
    assert get(daemon, "/healthz")[0] == 200, "a refusing stream is no reason to restart the daemon"
    fake.set_faults(call_failure_rate=0.0)
    poll_until(lambda: get(daemon, "/readyz")[0] == 200, WAIT_S, "ready again")
    assert any(key.startswith("tweet_producer_records_sent_total") for key in daemon.metrics())
    stop(daemon)
