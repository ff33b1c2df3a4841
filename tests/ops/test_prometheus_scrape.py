"""A real Prometheus server (Debian's `prometheus`) on 127.0.0.1 scrapes a running daemon: it finds the daemon's
records_sent_total through its HTTP API with the daemon's own value, loads the repository's alert rules, and
accepts every query of the Grafana dashboard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, poll_until
from tests.daemon.test_kinesis_delivery import UNLIMITED_SHARDS, config_body, start, stop
from tests.fake_kinesis import FakeKinesis
from tests.ops.test_alerts import RULES, dashboard_exprs, rules

RECORDS = 5
SHARDS = 2
# Prometheus scrapes (and evaluates rules) this often; the test's waits are a few of these.
SCRAPE_INTERVAL = "1s"
PROMETHEUS_START_TIMEOUT_S = 60.0
SCRAPED_TIMEOUT_S = 60.0
LAND_TIMEOUT_S = 60.0
PROMETHEUS_STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 5.0
# Grafana's variables, replaced by what Grafana would send for a short range over every instance.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$instance": ".*"}


@pytest.fixture
def fake() -> Iterator[FakeKinesis]:
    with FakeKinesis(SHARDS, seed=17) as kinesis:
        yield kinesis
        assert kinesis.stats().internal_errors == ()


class Prometheus:
    """A `prometheus` process on a free loopback port, scraping one target with the repository's rules."""

    def __init__(self, workdir: Path, target: str) -> None:
        assert shutil.which("prometheus"), "prometheus missing: apt-get install prometheus (Debian), as .ci/run does"
        self.port = free_port()
        workdir.mkdir()
        shutil.copy(RULES, workdir / "alerts.yml")
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
                    "rule_files": ["alerts.yml"],
                    "scrape_configs": [{"job_name": "tweet-producer", "static_configs": [{"targets": [target]}]}],
                }
            ),
            encoding="utf-8",
        )
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful API answer, or None while the server is not answering yet."""
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited ({self.process.returncode}):\n{self.log_path.read_text()[-3000:]}")
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        try:
            answer = json.loads(urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S).read())
        except OSError:
            return None
        assert answer["status"] == "success", answer
        return answer["data"]

    def value(self, query: str) -> float | None:
        data = self.api("/api/v1/query", query=query)
        if not data or not data["result"]:
            return None
        return sum(float(series["value"][1]) for series in data["result"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(PROMETHEUS_STOP_TIMEOUT_S)
        self._log.close()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def make(target: str) -> Prometheus:
        server = Prometheus(tmp_path / f"prometheus{len(started)}", target)
        started.append(server)
        return server

    yield make
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def rules_loaded(server: Prometheus) -> list[dict[str, Any]]:
    return [rule for group in server.api("/api/v1/rules")["groups"] for rule in group["rules"]]


def grafana_query(expr: str) -> str:
    return re.sub("|".join(re.escape(v) for v in GRAFANA_VARIABLES), lambda m: GRAFANA_VARIABLES[m.group(0)], expr)


@pytest.mark.slow
def test_prometheus_scrapes_the_daemon_and_finds_its_metrics(
    tmp_path: Path, daemon_factory: Any, prometheus_factory: Any, fake: FakeKinesis
) -> None:
    """Prometheus scraping a daemon that delivered a file's records returns its records_sent_total (the value the
    daemon serves, the records in the stream), sees the target up, loads every alert rule healthy, and answers every
    dashboard query without an error."""
    replay = tmp_path / "tweets.jsonl"
    replay.write_text("".join(json.dumps({"id": n, "text": f"tweet {n}"}) + "\n" for n in range(RECORDS)), encoding="utf-8")
    daemon = start(daemon_factory, config_body(replay, fake, sink_extra=UNLIMITED_SHARDS))
    assert fake.wait_until(lambda f: len(f.records()) >= RECORDS, LAND_TIMEOUT_S), f"{len(fake.records())} stored"
    served = poll_until(lambda: daemon.metrics().get('tweet_producer_records_sent_total{sink="kinesis"}'), LAND_TIMEOUT_S, "sent")
    assert served == RECORDS == len(fake.records())

    server = prometheus_factory(f"127.0.0.1:{daemon.metrics_port}")
    poll_until(lambda: server.api("/api/v1/status/buildinfo"), PROMETHEUS_START_TIMEOUT_S, "Prometheus to answer")
    scraped = poll_until(
        lambda: server.value('tweet_producer_records_sent_total{job="tweet-producer",sink="kinesis"}') == served,
        SCRAPED_TIMEOUT_S,
        "Prometheus to return the daemon's records_sent_total",
    )
    assert scraped
    assert server.value(f'up{{job="tweet-producer",instance="127.0.0.1:{daemon.metrics_port}"}}') == 1
    assert server.value("tweet_producer_records_received_total") == RECORDS

    loaded_rules = poll_until(lambda: rules_loaded(server), PROMETHEUS_START_TIMEOUT_S, "the rules loaded")
    assert sorted(r["name"] for r in loaded_rules) == sorted(r["alert"] for r in rules())
    poll_until(lambda: all(r["health"] == "ok" for r in rules_loaded(server)), SCRAPED_TIMEOUT_S, "every rule evaluated ok")

    for expr in dashboard_exprs():
        if expr.startswith("label_values("):
            metric = expr.removeprefix("label_values(").partition(",")[0]
            assert server.value(metric) is not None, f"dashboard variable finds no {metric}"
            continue
        assert server.api("/api/v1/query", query=grafana_query(expr)) is not None, expr

    server.stop()
    summary = stop(daemon)
    assert summary["sent"] == RECORDS and summary["dead_lettered"] == 0
