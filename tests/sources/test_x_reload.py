"""Source `x` across hot reloads (SIGHUP) of a real daemon on the fake X and the fake Kinesis (issue 17): a changed
rule set restarts the source, which makes the server's rules exactly the new set through the rules API and
reconnects once; a reload that leaves the source alone touches neither the rules nor the stream. Every tweet the
fake sent lands in the stream once."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import poll_until
from tests.daemon.test_kinesis_delivery import DUMMY_AWS, FAST_RETRY, tweet_lines, write_lines
from tests.fake_kinesis import FakeKinesis
from tests.fake_x import FakeX, Request, Send, StreamScript, Until, tweet_line

RULES = "/2/tweets/search/stream/rules"
# Tweets per part of the run: the first connection's, the second's before and after the unchanged reload.
PART = 40
EXTRA_LINES = 30  # the file source the unchanged reload adds
# Connection k's tweets have ids k * ID_BLOCK + n: each one tells which connection sent it.
ID_BLOCK = 1_000_000
WAIT_S = 60.0
# The fake's connections fall silent between parts (no keep-alives): no stall may end one during the test.
STALL_TIMEOUT_S = 300
OLD_RULES = [("cats", "cats"), ("dogs", "dogs")]
NEW_RULES = [("dogs", "dogs"), ("birds", "birds")]


def connection_lines(connection: int, start: int, count: int) -> list[bytes]:
    return [tweet_line(connection * ID_BLOCK + n, author=str(100 + n % 7)) for n in range(start, start + count)]


def chunk(lines: list[bytes]) -> Send:
    return Send(b"".join(line + b"\r\n" for line in lines))


@pytest.fixture
def more() -> threading.Event:
    """Set once the unchanged reload is done: the second connection then sends its last part."""
    return threading.Event()


@pytest.fixture
def fake_x(more: threading.Event) -> Iterator[FakeX]:
    """Connection 1 sends a part and stays open (only the reload ends it); connection 2 sends a part, waits
    for `more`, sends another and stays open."""
    scripts = [
        StreamScript(steps=[Send(b"\r\n"), chunk(connection_lines(1, 0, PART))]),
        StreamScript(steps=[chunk(connection_lines(2, 0, PART)), Until(more), chunk(connection_lines(2, PART, PART))]),
    ]
    server = FakeX(scripts=scripts).start()
    yield server
    server.stop()


def body(fake_x: FakeX, fake: FakeKinesis, rules: list[tuple[str, str]], extra: Path | None = None) -> str:
    """The x source with `rules` (and a file source on `extra`), the kinesis sink on the fake."""
    listed = "".join(f'      - {{value: "{value}", tag: {tag}}}\n' for value, tag in rules)
    file_source = f'  - name: extra\n    type: file\n    paths: ["{extra}"]\n' if extra is not None else ""
    return f"""
sources:
  - name: x
    type: x
    api_url: {fake_x.url}
    bearer_token: ${{X_BEARER_TOKEN}}
    stall_timeout: {STALL_TIMEOUT_S}
    rules:
{listed}{file_source}sink:
  type: kinesis
  stream: {fake.stream}
  endpoint_url: {fake.url}
  region: us-east-1
  linger: 0.01
{FAST_RETRY}dead_letter:
  path: dead.jsonl
"""


def rules_calls(fake_x: FakeX) -> list[Request]:
    return sorted(fake_x.calls("GET", RULES) + fake_x.calls("POST", RULES), key=lambda r: r.at)


def held_rules(fake_x: FakeX) -> dict[tuple[str, str], str]:
    """(value, tag) -> id of each rule the fake server holds."""
    return {(rule["value"], rule.get("tag", "")): rule["id"] for rule in list(fake_x.rules)}


def reloaded(daemon: Any, count: int) -> dict[str, Any]:
    """The `count`-th config_reloaded event (a reload that failed is a test failure)."""

    def nth() -> dict[str, Any] | None:
        entries = daemon.logs()
        failed = [e for e in entries if e.get("event") == "config_reload_failed"]
        assert not failed, failed
        done = [e for e in entries if e.get("event") == "config_reloaded"]
        return done[count - 1] if len(done) >= count else None

    return poll_until(nth, WAIT_S, f"config_reloaded #{count}")


def landed(fake: FakeKinesis, expected: list[bytes]) -> None:
    assert fake.wait_until(lambda f: set(expected) <= set(f.data_counts()), WAIT_S), "tweets missing from the stream"


@pytest.mark.slow
def test_a_reload_resynchronises_changed_rules_and_leaves_an_unchanged_x_source_alone(
    tmp_path: Path, fake_x: FakeX, more: threading.Event, daemon_factory: Any
) -> None:
    """Rules changed: cats deleted, birds added (dogs kept, same id), one new stream connection after the rules
    calls; then a reload adding a file source: no rules call, no new connection, the same connection goes on;
    every tweet and line in the stream exactly once."""
    with FakeKinesis(2, seed=17) as fake:
        env = {**DUMMY_AWS, "X_BEARER_TOKEN": fake_x.token}
        daemon = daemon_factory(body(fake_x, fake, OLD_RULES), embedded=False).start(env)
        daemon.wait_for_event("source_connected", WAIT_S)
        assert daemon.process is not None
        first = connection_lines(1, 0, PART)
        landed(fake, first)
        old_ids = held_rules(fake_x)
        assert set(old_ids) == set(OLD_RULES)
        calls_before = len(rules_calls(fake_x))

        common = daemon.config_path.read_text(encoding="utf-8").removeprefix(body(fake_x, fake, OLD_RULES))
        daemon.config_path.write_text(body(fake_x, fake, NEW_RULES) + common, encoding="utf-8")
        daemon.process.send_signal(signal.SIGHUP)
        changed = reloaded(daemon, 1)
        assert changed["restarted"] == ["x"] and not changed["sink_changed"], changed
        second = connection_lines(2, 0, PART)
        landed(fake, second)

        # The server's rules are exactly the new set: the kept rule was not deleted and added again.
        now = held_rules(fake_x)
        assert set(now) == set(NEW_RULES) and now[("dogs", "dogs")] == old_ids[("dogs", "dogs")], now
        writes = [r for r in rules_calls(fake_x)[calls_before:] if r.method == "POST"]
        deletes = [r.body["delete"]["ids"] for r in writes if "delete" in r.body]
        adds = [
            [rule["value"] for rule in r.body["add"]] for r in writes if "add" in r.body and r.query.get("dry_run") != ["true"]
        ]
        assert deletes == [[old_ids[("cats", "cats")]]] and adds == [["birds"]], [(w.query, w.body) for w in writes]
        # One reconnect, after the rules were in place.
        connects = fake_x.stream_connects()
        assert len(connects) == 2 and connects[1].at > max(w.at for w in writes), connects

        extra = write_lines(tmp_path / "extra.jsonl", tweet_lines(EXTRA_LINES))
        calls_before = len(rules_calls(fake_x))
        daemon.config_path.write_text(body(fake_x, fake, NEW_RULES, extra) + common, encoding="utf-8")
        daemon.process.send_signal(signal.SIGHUP)
        unchanged = reloaded(daemon, 2)
        assert unchanged["started"] == ["extra"] and "x" in unchanged["unchanged"] and not unchanged["restarted"], unchanged
        more.set()
        third = connection_lines(2, PART, PART)
        landed(fake, third + tweet_lines(EXTRA_LINES))
        assert len(rules_calls(fake_x)) == calls_before, rules_calls(fake_x)[calls_before:]
        assert len(fake_x.stream_connects()) == 2
        starts = [e for e in daemon.logs() if e.get("event") == "source_started" and e.get("source") == "x"]
        assert len(starts) == 2, starts  # at start and at the rules change; the unchanged reload started nothing

        assert daemon.stop(signal.SIGTERM, timeout=WAIT_S) == 0
        assert fake.data_counts() == Counter(first + second + third + tweet_lines(EXTRA_LINES))
        assert set(fake_x.sent_lines()) == set(first + second + third)
