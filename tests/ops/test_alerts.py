"""The ops files: the alert rules pass `promtool check rules` and their own `promtool test rules` unit tests
(which fail when a rule is weakened), and the rules and the Grafana dashboard name only metrics a real daemon
Telemetry registry exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.telemetry import Telemetry
from tests.conftest import REPO

RULES = REPO / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "ops" / "prometheus" / "alerts_test.yml"
SCRAPE_CONFIG = REPO / "ops" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "ops" / "grafana" / "tweet-producer.json"
PROMTOOL_TIMEOUT_S = 60
# Grafana 9's first schema: the dashboard imports into Grafana 9 and later.
MIN_SCHEMA_VERSION = 36
METRIC_NAME = re.compile(r"\btweet_producer_[a-z0-9_]+")
# Series Prometheus itself adds to every scrape target (the only names not from the daemon).
SCRAPE_SERIES = {"up"}
# The six rows issue 17 asks for, then the config reloads.
ROWS = [
    "Overview",
    "Delivery and losses",
    "Buffers and backpressure",
    "Latency",
    "Throughput",
    "Per-source lag",
    "Config reloads",
]
# Suffixes under which prometheus-client exposes a family's samples, by family type.
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    assert shutil.which("promtool"), "promtool missing: apt-get install prometheus (Debian), as .ci/run does"
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S)


def exported_names() -> set[str]:
    """Every sample name a fresh daemon Telemetry registry serves on /metrics."""
    names: set[str] = set()
    for family in Telemetry("kinesis").registry.collect():
        suffixes = SAMPLE_SUFFIXES.get(family.type)
        assert suffixes is not None, f"{family.name}: unexpected type {family.type}"
        names.update(family.name + suffix for suffix in suffixes)
    return names


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def dashboard_exprs() -> list[str]:
    exprs = [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]
    exprs += [variable["query"]["query"] for variable in dashboard()["templating"]["list"]]
    return exprs


def test_promtool_check_rules_passes() -> None:
    """`promtool check rules` accepts alerts.yml, and `promtool check config` the example scrape config."""
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout
    config = promtool("check", "config", str(SCRAPE_CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    """`promtool test rules alerts_test.yml` passes: each alert fires on its bad series, not on healthy ones."""
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_unit_test_a_for_a_severity_and_annotations() -> None:
    """Each rule has `for:`, a severity, summary and description, and is named by a test in alerts_test.yml."""
    tested = {case["alertname"] for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]}
    for rule in rules():
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["alert"] in tested, f"{rule['alert']} has no promtool test"


# Weakened rules the unit tests must catch: (what is broken, text in alerts.yml, its replacement).
MUTATIONS = [
    ("no-records alert ignores whether sources run", "\n          and on (job, instance) tweet_producer_sources_running > 0", ""),
    ("buffer threshold far too low", "buffer_bytes > 0.9 * 67108864", "buffer_bytes > 0.001 * 67108864"),
    ("sink-unhealthy alert without its for:", "sink_healthy == 0\n        for: 2m", "sink_healthy == 0\n        for: 0m"),
    (
        "dead letters on a count, not a rate",
        "rate(tweet_producer_records_failed_total[5m])",
        "tweet_producer_records_failed_total",
    ),
    (
        "refused-reload alert without its for:",
        "last_reload_successful == 0\n        for: 5m",
        "last_reload_successful == 0\n        for: 0m",
    ),
]


@pytest.mark.parametrize(("broken", "old", "new"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_rule_unit_tests_fail_on_a_weakened_rule(tmp_path: Path, broken: str, old: str, new: str) -> None:
    """The promtool tests are not vacuous: a copy of alerts.yml with one rule weakened fails them."""
    text = RULES.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"mutation target not found once: {old!r}"
    (tmp_path / "alerts.yml").write_text(text.replace(old, new), encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    assert promtool("check", "rules", "alerts.yml", cwd=tmp_path).returncode == 0, "the mutant must still be a valid rule"
    tested = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0, f"promtool tests still pass with: {broken}"


def test_rules_and_dashboard_name_only_metrics_the_daemon_exports() -> None:
    """Every tweet_producer_* name in alerts.yml and in the dashboard's queries is a sample name a real Telemetry
    registry serves (counters as _total, histograms as _bucket/_sum/_count); other names are scrape series."""
    exported = exported_names()
    assert "tweet_producer_records_sent_total" in exported and "tweet_producer_put_latency_seconds_bucket" in exported
    sources = {f"rule {rule['alert']}": rule["expr"] for rule in rules()}
    sources |= {f"dashboard query {n}": expr for n, expr in enumerate(dashboard_exprs())}
    for where, expr in sources.items():
        named = set(METRIC_NAME.findall(expr))
        assert named or set(re.findall(r"[a-z_]+", expr)) & SCRAPE_SERIES, f"{where} names no metric: {expr}"
        assert named <= exported, f"{where}: unknown metrics {sorted(named - exported)}"


def test_dashboard_is_importable_grafana_json() -> None:
    """The dashboard is JSON with unique panel ids, a ${DS_PROMETHEUS} datasource input used by every panel and
    query, a query on every panel, and the issue's rows in order."""
    board = dashboard()
    assert board["schemaVersion"] >= MIN_SCHEMA_VERSION
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    panels = board["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    assert [panel["title"] for panel in panels if panel["type"] == "row"] == ROWS
    for panel in (p for p in panels if p["type"] != "row"):
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], f"panel {panel['title']} has no query"
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"]), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
    latency = " ".join(t["expr"] for p in panels if p["title"] == "Put latency" for t in p["targets"])
    assert "histogram_quantile(0.99" in latency and "tweet_producer_put_latency_seconds_bucket" in latency
