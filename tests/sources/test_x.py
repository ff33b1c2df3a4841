"""Source `x` against a real fake X on 127.0.0.1: records, bad lines, rule sync, credentials, stop, secrets."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sources.x import XSource, XSourceConfig, _Dropped, _Schedules
from sources.x_stream import LineSplitter
from tests.conftest import poll_until
from tests.fake_x import KEEPALIVE, FakeX, Pause, Reset, Send, StreamScript, tweet_line
from tests.sources.test_x_support import (
    DEADLINE_S,
    lines,
    make_source,
    run_in_thread,
    run_until_stopped,
    serve_fake_x,
    x_context,
)


@pytest.fixture
def fake() -> Iterator[FakeX]:
    yield from serve_fake_x()


def test_records_are_the_lines_as_x_sends_them(fake: FakeX) -> None:
    """Each stream line becomes one record byte for byte (data, includes, matching_rules), keep-alives are not records."""
    fake.scripts = [
        StreamScript(steps=[Send(KEEPALIVE), Send(lines(tweet_line(1))), Send(KEEPALIVE + lines(tweet_line(2), tweet_line(3)))])
    ]
    ctx = x_context(stop_after_emits=3)
    run_until_stopped(make_source(fake), ctx)
    assert [data for data, _, _ in ctx.emitted] == [tweet_line(1), tweet_line(2), tweet_line(3)]
    event = ctx.emitted[0][1]
    assert event["includes"]["users"][0]["username"] == "alice" and event["matching_rules"][0]["id"] == "r1"
    assert {origin for _, _, origin in ctx.emitted} == {"x:filtered"}
    assert ctx.rejected == []
    connect = fake.stream_connects()[0]
    assert connect.path == "/2/tweets/search/stream"
    assert connect.query["expansions"] == ["author_id"] and "username" in connect.query["user.fields"][0]
    assert connect.headers["User-Agent"].startswith("tweet-producer/")
    assert ctx.connections[0][0] is True


def test_a_line_split_across_chunks_is_one_record(fake: FakeX) -> None:
    """A line cut at any byte by the chunking is reassembled into one record."""
    data = lines(tweet_line(1))
    fake.scripts = [StreamScript(steps=[Send(data[:7]), Pause(0.05), Send(data[7:-1]), Send(data[-1:])])]
    ctx = x_context(stop_after_emits=1)
    run_until_stopped(make_source(fake), ctx)
    assert [d for d, _, _ in ctx.emitted] == [tweet_line(1)]


def test_bad_lines_are_dead_lettered_with_origin_and_reason(fake: FakeX) -> None:
    """Garbage, bad UTF-8, oversize and non-object JSON are dead-lettered as x:filtered with their reason; the stream goes on."""
    oversize = json.dumps({"data": {"id": "big", "text": "y" * 3000}}).encode()
    fake.scripts = [
        StreamScript(
            steps=[Send(lines(b"garbage{", b'{"data": "\xff\xfe"}', oversize, b"[1, 2]", b'"text"', b"42", tweet_line(9)))]
        )
    ]
    ctx = x_context(stop_after_emits=1)
    run_until_stopped(make_source(fake, max_line_bytes=2000), ctx)
    assert [d for d, _, _ in ctx.emitted] == [tweet_line(9)]
    assert [(origin, reason) for _, origin, reason, _ in ctx.rejected] == [
        ("x:filtered", "invalid_json"),
        ("x:filtered", "invalid_utf8"),
        ("x:filtered", "line_too_long"),
        ("x:filtered", "not_an_object"),
        ("x:filtered", "not_an_object"),
        ("x:filtered", "not_an_object"),
    ]
    assert ctx.rejected[0][0] == b"garbage{"
    assert len(ctx.rejected[2][0]) == 2001  # the oversize line is cut, never buffered whole


def test_rules_are_synchronised_added_deleted_kept(fake: FakeX) -> None:
    """Missing rules are added (after a dry run), stale ones deleted, matching ones kept with their id."""
    fake.rules = [
        {"id": "1", "value": "cats", "tag": "t"},
        {"id": "2", "value": "stale"},
        {"id": "3", "value": "dogs", "tag": "old"},
    ]
    ctx = x_context(stop_after_emits=1)
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1)))])]
    rules = [{"value": "cats", "tag": "t"}, {"value": "dogs", "tag": "new"}, {"value": "birds"}]
    run_until_stopped(make_source(fake, rules=rules), ctx)
    by_value = {(r["value"], r.get("tag")): r["id"] for r in fake.rules}
    assert set(by_value) == {("cats", "t"), ("dogs", "new"), ("birds", None)}
    assert by_value[("cats", "t")] == "1"
    posts = fake.calls("POST", "/2/tweets/search/stream/rules")
    assert [(p.query.get("dry_run"), list(p.body)) for p in posts] == [(["true"], ["add"]), (None, ["delete"]), (None, ["add"])]
    assert sorted(posts[1].body["delete"]["ids"]) == ["2", "3"]
    # "dogs" only changed its tag: X would call a dry run of it a DuplicateRule while the old one exists.
    assert posts[0].body == {"add": [{"value": "birds"}]}
    assert ("rules_synchronised", "added 2, deleted 2, kept 1") in ctx.protocol_messages


def test_a_rule_x_rejects_stops_the_source_naming_it_and_nothing_changes(fake: FakeX) -> None:
    """A rule failing the dry run ends `run` with the rule's index, value and X's reason; the server's rules stay."""
    fake.rules = [{"id": "1", "value": "stale"}]
    thread = run_in_thread(make_source(fake, rules=[{"value": "ok"}, {"value": "bad (("}]), ctx := x_context())
    thread.join(DEADLINE_S)
    assert not thread.is_alive(), "a rejected rule must end the source, not loop"
    kind, detail = ctx.protocol_messages[-1]
    assert kind == "rule_rejected"
    assert "rules[1]" in detail and "bad ((" in detail and "balanced parentheses" in detail
    assert fake.rules == [{"id": "1", "value": "stale"}]
    assert fake.stream_connects() == [] and ctx.reconnects == []


def test_the_token_never_shows_in_reports_or_logs_of_a_normal_run(fake: FakeX, caplog: pytest.LogCaptureFixture) -> None:
    """Through connects, drops, resets and in-band errors, the bearer token appears in no report and no log line."""
    caplog.set_level(logging.DEBUG)
    disconnect = json.dumps(
        {"errors": [{"title": "operational-disconnect", "disconnect_type": "OperationalDisconnect"}]}
    ).encode()
    fake.scripts = [
        StreamScript(steps=[Send(lines(tweet_line(1), disconnect))]),
        StreamScript(steps=[Reset()]),
        StreamScript(status=500),
    ]
    ctx = x_context(stop_after_reconnects=3)
    run_until_stopped(make_source(fake), ctx)
    assert len(ctx.reconnects) == 3
    assert fake.token not in ctx.everything_said() and fake.token not in caplog.text


def test_stop_returns_within_the_stop_timeout_from_a_silent_stream(fake: FakeX) -> None:
    """With the default 22 s stall clock and a silent connection, stop ends `run` within about a second."""
    ctx = x_context()
    thread = run_in_thread(make_source(fake), ctx)
    poll_until(lambda: fake.stream_connects(), DEADLINE_S, "a stream connection")
    poll_until(lambda: ctx.connections, DEADLINE_S, "the source connected")
    started = time.monotonic()
    ctx.stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 1.5
    poll_until(lambda: not any(t.name == "x-stream-reader" for t in threading.enumerate()), 2, "the reader thread to end")


def test_stop_cuts_a_backoff_wait_short(fake: FakeX) -> None:
    """Waiting 60 s after a 429, the source still stops within about a second."""
    fake.scripts = [StreamScript(status=429)]
    ctx = x_context(max_wait_s=None)
    thread = run_in_thread(make_source(fake), ctx)
    poll_until(lambda: ctx.reconnects, DEADLINE_S, "a reconnect wait")
    started = time.monotonic()
    ctx.stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 1.5


def test_app_key_and_secret_are_exchanged_for_a_token(fake: FakeX) -> None:
    """consumer_key/secret: POST /oauth2/token (client credentials), then the stream with the token it returned."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1)))])]
    ctx = x_context(stop_after_emits=1)
    source = XSource(XSourceConfig(consumer_key=fake.consumer_key, consumer_secret=fake.consumer_secret, api_url=fake.url))
    run_until_stopped(source, ctx)
    assert len(fake.calls("POST", "/oauth2/token")) == 1 and len(ctx.emitted) == 1


def test_a_refused_app_secret_is_an_auth_failure(fake: FakeX, caplog: pytest.LogCaptureFixture) -> None:
    """A refused key/secret: http_403 on the long schedule; neither secret shows anywhere."""
    caplog.set_level(logging.DEBUG)
    ctx = x_context(stop_after_reconnects=1)
    secret = "not-the-secret-XYZ123"  # noqa: S105 - a dummy
    run_until_stopped(XSource(XSourceConfig(consumer_key="k", consumer_secret=secret, api_url=fake.url)), ctx)
    assert [(r, d) for r, d, _ in ctx.reconnects] == [("http_403", 60.0)]
    assert secret not in ctx.everything_said() and secret not in caplog.text


def test_clear_stale_connections_calls_the_connections_api_first(fake: FakeX) -> None:
    """clear_stale_connections: DELETE /2/connections/all before the stream connects."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1)))])]
    ctx = x_context(stop_after_emits=1)
    run_until_stopped(make_source(fake, clear_stale_connections=True), ctx)
    deletes = fake.calls("DELETE", "/2/connections/all")
    assert len(deletes) == 1 and deletes[0].at < fake.stream_connects()[0].at


def test_sample_stream_and_backfill(fake: FakeX) -> None:
    """stream: sample connects to /2/tweets/sample/stream (no rule calls) and passes backfill_minutes."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1)))])]
    ctx = x_context(stop_after_emits=1)
    run_until_stopped(make_source(fake, stream="sample", rules=[], backfill_minutes=2), ctx)
    connect = fake.stream_connects()[0]
    assert connect.path == "/2/tweets/sample/stream" and connect.query["backfill_minutes"] == ["2"]
    assert fake.calls("GET", "/2/tweets/search/stream/rules") == []
    assert ctx.emitted[0][2] == "x:sample"


def test_config_reads_the_token_from_a_systemd_credential(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without X_BEARER_TOKEN: the token in $CREDENTIALS_DIRECTORY/x-bearer-token (LoadCredential=), stripped;
    the environment variable wins when both are there."""
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    (tmp_path / "x-bearer-token").write_text("from-credential\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = XSourceConfig()
    assert config.bearer_token is not None and config.bearer_token.get_secret_value() == "from-credential"
    monkeypatch.setenv("X_BEARER_TOKEN", "from-env")
    assert XSourceConfig().bearer_token.get_secret_value() == "from-env"  # type: ignore[union-attr]
    monkeypatch.delenv("X_BEARER_TOKEN")
    (tmp_path / "x-bearer-token").unlink()
    with pytest.raises(ValidationError, match="X_BEARER_TOKEN"):
        XSourceConfig()


def test_config_reads_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials in the config: X_BEARER_TOKEN; none there either: an error saying where to put it."""
    monkeypatch.setenv("X_BEARER_TOKEN", "from-env")
    config = XSourceConfig()
    assert config.bearer_token is not None and config.bearer_token.get_secret_value() == "from-env"
    assert config.expansions == ["author_id"]
    monkeypatch.delenv("X_BEARER_TOKEN")
    with pytest.raises(ValidationError, match="X_BEARER_TOKEN"):
        XSourceConfig()
    with pytest.raises(ValidationError, match="filtered stream only"):
        XSourceConfig(
            bearer_token="t",  # noqa: S106 - a dummy
            stream="sample",
            rules=[{"value": "a"}],
        )
    with pytest.raises(ValidationError, match="each value once"):
        XSourceConfig(bearer_token="t", rules=[{"value": "a"}, {"value": "a", "tag": "b"}])  # noqa: S106 - a dummy
    with pytest.raises(ValidationError, match="go together"):
        XSourceConfig(consumer_key="k")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_line_splitting_does_not_depend_on_chunking(pieces: list[bytes], cuts: list[int]) -> None:
    """Any byte stream cut anywhere gives the same lines as read whole; no line exceeds the limit by more than a byte."""
    stream = b"\n".join(pieces) + b"\n"
    whole = LineSplitter(30).feed(stream)
    splitter = LineSplitter(30)
    chunked: list[tuple[bytes, bool]] = []
    last = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        chunked += splitter.feed(stream[last:cut])
        last = cut
    assert chunked == whole
    assert all(len(line) <= 31 for line, _ in whole)
    assert [line for line, truncated in whole if not truncated] == [
        p.removesuffix(b"\r") for p in stream.split(b"\n")[:-1] if len(p.removesuffix(b"\r")) <= 30
    ]


_JSON_LINES = st.one_of(
    st.binary(max_size=60),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["data", "errors", "x"]), children, max_size=3)
        ),
        max_leaves=8,
    ).map(lambda value: json.dumps(value).encode()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_JSON_LINES, max_size=6))
def test_any_stream_line_is_a_record_a_rejection_or_a_protocol_message(raw_lines: list[bytes]) -> None:
    """Whatever X sends on a line: one record, one dead letter or one counted protocol message (or an in-band end)."""
    source = XSource(XSourceConfig(bearer_token="t", max_line_bytes=50))  # noqa: S106 - a dummy
    schedules = _Schedules()
    for raw in raw_lines:
        ctx = x_context()
        splitter = LineSplitter(50)
        pieces = splitter.feed(raw.replace(b"\n", b" ") + b"\r\n")
        assert len(pieces) == 1
        line, truncated = pieces[0]
        try:
            source._line(line, truncated, ctx, schedules)
        except _Dropped:
            assert ctx.protocol_messages, "an in-band end is counted first"
            continue
        outcomes = len(ctx.emitted) + len(ctx.rejected) + len(ctx.protocol_messages)
        assert outcomes == (0 if not line else 1)
        assert all(data == line for data, _, _ in ctx.emitted)


def test_lines_received_when_the_daemon_stops_are_dead_lettered(fake: FakeX) -> None:
    """emit refuses (stopping) in the middle of a chunk: the lines after the refused one are dead-lettered as unsent."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1), tweet_line(2), tweet_line(3), tweet_line(4)))])]
    ctx = x_context(stop_after_emits=1)
    run_until_stopped(make_source(fake), ctx)
    # Line 2 is the one emit refused: the daemon accounts for it (SourceContext.emit), so it is not handed over twice.
    assert [d for d, _, _ in ctx.emitted] == [tweet_line(1)]
    assert [(d, r) for d, _, r, _ in ctx.rejected] == [(tweet_line(3), "unsent"), (tweet_line(4), "unsent")]


@pytest.mark.parametrize("where", ["rules", "stream headers"])
def test_stop_returns_within_a_second_while_a_request_waits_for_its_answer(fake: FakeX, where: str) -> None:
    """A rules call or stream connect the server never answers (timeouts of 10 and 27 s) does not hold up a stop."""
    fake.hold_rules = where == "rules"
    fake.scripts = [StreamScript(hold_headers=True)]
    ctx = x_context()
    thread = run_in_thread(make_source(fake), ctx)
    path = "/2/tweets/search/stream/rules" if where == "rules" else "/2/tweets/search/stream"
    poll_until(lambda: fake.calls("GET", path), DEADLINE_S, f"the {where} request")
    started = time.monotonic()
    ctx.stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 1.5
    assert ctx.emitted == [] and ctx.reconnects == []
