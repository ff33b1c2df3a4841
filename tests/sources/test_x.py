"""Source `x` against a real fake X on 127.0.0.1: records, bad lines, rule sync, every reconnect rule, stop, secrets."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sources.x import XSource, XSourceConfig
from sources.x_stream import LineSplitter
from tests.conftest import free_port, poll_until
from tests.fake_x import KEEPALIVE, Close, FakeX, Pause, Reset, Send, StreamScript, Until, tweet_line

DEADLINE_S = 10.0
# X's rules, to within 10 %.
TOLERANCE = 0.10


@dataclass
class XContext:
    """A SourceContext that records everything; `wait` returns at once (backoff delays are only recorded)."""

    name: str = "x"
    real_waits: bool = False
    emitted: list[tuple[bytes, Any, str]] = field(default_factory=list)
    rejected: list[tuple[bytes, str, str, str]] = field(default_factory=list)
    connections: list[tuple[bool, str]] = field(default_factory=list)
    reconnects: list[tuple[str, float, str, float]] = field(default_factory=list)  # reason, delay, detail, at
    messages: list[tuple[str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    stop_after_emits: int | None = None
    stop_after_reconnects: int | None = None

    @property
    def stopping(self) -> bool:
        return self.stop.is_set()

    def emit(self, data: bytes, event: Any, origin: str) -> bool:
        if self.stop.is_set():
            return False
        self.emitted.append((data, event, origin))
        if self.stop_after_emits is not None and len(self.emitted) >= self.stop_after_emits:
            self.stop.set()
        return True

    def reject(self, data: bytes, origin: str, reason: str, detail: str) -> None:
        self.rejected.append((data, origin, reason, detail))

    def wait(self, seconds: float) -> bool:
        if self.real_waits:
            return self.stop.wait(seconds)
        return self.stop.is_set()

    def connection(self, connected: bool, detail: str = "") -> None:
        self.connections.append((connected, detail))

    def reconnecting(self, reason: str, delay_s: float, detail: str = "") -> None:
        self.reconnects.append((reason, delay_s, detail, time.monotonic()))
        if self.stop_after_reconnects is not None and len(self.reconnects) >= self.stop_after_reconnects:
            self.stop.set()

    def protocol_message(self, kind: str, detail: str) -> None:
        self.messages.append((kind, detail))

    def delays(self) -> list[float]:
        return [delay for _, delay, _, _ in self.reconnects]

    def everything_reported(self) -> str:
        return repr((self.connections, self.reconnects, self.messages, self.rejected))


@pytest.fixture
def fake() -> Iterator[FakeX]:
    server = FakeX().start()
    yield server
    server.stop()


def make_source(fake: FakeX, **config: Any) -> XSource:
    settings_ = {"bearer_token": fake.token, "api_url": fake.url, "rules": [{"value": "cats", "tag": "t"}]} | config
    return XSource(XSourceConfig(**settings_))


def run_in_thread(source: XSource, ctx: XContext) -> threading.Thread:
    thread = threading.Thread(target=source.run, args=(ctx,), daemon=True)
    thread.start()
    return thread


def run_until_stopped(source: XSource, ctx: XContext, timeout: float = DEADLINE_S) -> None:
    thread = run_in_thread(source, ctx)
    thread.join(timeout)
    ctx.stop.set()
    thread.join(2)
    assert not thread.is_alive(), "the source did not stop"


def lines(*records: bytes) -> bytes:
    return b"".join(r + b"\r\n" for r in records)


def test_records_are_the_lines_as_x_sends_them(fake: FakeX) -> None:
    """Each stream line becomes one record byte for byte (data, includes, matching_rules), keep-alives are not records."""
    fake.scripts = [
        StreamScript(steps=[Send(KEEPALIVE), Send(lines(tweet_line(1))), Send(KEEPALIVE + lines(tweet_line(2), tweet_line(3)))])
    ]
    ctx = XContext(stop_after_emits=3)
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
    ctx = XContext(stop_after_emits=1)
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
    ctx = XContext(stop_after_emits=1)
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
    ctx = XContext(stop_after_emits=1)
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
    assert ("rules_synchronised", "added 2, deleted 2, kept 1") in ctx.messages


def test_a_rule_x_rejects_stops_the_source_naming_it_and_nothing_changes(fake: FakeX) -> None:
    """A rule failing the dry run ends `run` with the rule's index, value and X's reason; the server's rules stay."""
    fake.rules = [{"id": "1", "value": "stale"}]
    thread = run_in_thread(make_source(fake, rules=[{"value": "ok"}, {"value": "bad (("}]), ctx := XContext())
    thread.join(DEADLINE_S)
    assert not thread.is_alive(), "a rejected rule must end the source, not loop"
    kind, detail = ctx.messages[-1]
    assert kind == "rule_rejected"
    assert "rules[1]" in detail and "bad ((" in detail and "balanced parentheses" in detail
    assert fake.rules == [{"id": "1", "value": "stale"}]
    assert fake.stream_connects() == [] and ctx.reconnects == []


def test_a_drop_after_records_reconnects_at_once_then_backs_off_linearly(fake: FakeX) -> None:
    """Closed after tweets: one reconnect at once; further drops without tweets: +250 ms each (X's TCP rule)."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1))), Close()])] + [StreamScript(steps=[Close()])] * 3
    ctx = XContext(stop_after_reconnects=4)
    run_until_stopped(make_source(fake), ctx)
    assert [r for r, _, _, _ in ctx.reconnects] == ["closed"] * 4
    assert ctx.delays() == pytest.approx([0.0, 0.25, 0.5, 0.75], rel=TOLERANCE)


def test_a_reset_mid_stream_reconnects_at_once(fake: FakeX) -> None:
    """A TCP reset after tweets is a drop: reconnect at once, and the next connection flows again."""
    fake.scripts = [
        StreamScript(steps=[Send(lines(tweet_line(1))), Pause(0.1), Reset()]),
        StreamScript(steps=[Send(lines(tweet_line(2)))]),
    ]
    ctx = XContext(stop_after_emits=2)
    run_until_stopped(make_source(fake), ctx)
    assert [d for d, _, _ in ctx.emitted] == [tweet_line(1), tweet_line(2)]
    assert [(r, d) for r, d, _, _ in ctx.reconnects] == [("network", 0.0)]


def test_network_errors_back_off_linearly_up_to_16_s(fake: FakeX) -> None:
    """Connection refused: 0.25, 0.5, 0.75 ... seconds, capped at 16 s."""
    ctx = XContext(stop_after_reconnects=70)
    run_until_stopped(make_source(fake, api_url=f"http://127.0.0.1:{free_port()}", rules=[]), ctx, timeout=30)
    delays = ctx.delays()
    assert delays[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0], rel=TOLERANCE)
    assert max(delays) == pytest.approx(16.0) and delays[-1] == pytest.approx(16.0)
    assert {r for r, _, _, _ in ctx.reconnects} == {"network"}


def test_twitterapi_own_unthrottled_error_logs_are_dropped(fake: FakeX, caplog: pytest.LogCaptureFixture) -> None:
    """TwitterAPI logs each connection error on the root logger; the source reports them itself, so none reach the logs."""
    caplog.set_level(logging.DEBUG)
    ctx = XContext(stop_after_reconnects=3)
    run_until_stopped(make_source(fake, api_url=f"http://127.0.0.1:{free_port()}", rules=[]), ctx)
    assert len(ctx.reconnects) == 3
    assert [r.pathname for r in caplog.records if "TwitterAPI" in r.pathname] == []


def test_http_errors_back_off_exponentially_from_5_s_to_320_s(fake: FakeX) -> None:
    """503 on connect: 5, 10, 20 ... 320, 320 seconds."""
    fake.scripts = [StreamScript(status=503)] * 8
    ctx = XContext(stop_after_reconnects=8)
    run_until_stopped(make_source(fake), ctx)
    assert ctx.delays() == pytest.approx([5, 10, 20, 40, 80, 160, 320, 320], rel=TOLERANCE)
    assert {r for r, _, _, _ in ctx.reconnects} == {"http_503"}


def test_429_backs_off_exponentially_from_a_minute(fake: FakeX) -> None:
    """429 on connect: 60, 120, 240 seconds."""
    fake.scripts = [StreamScript(status=429, body={"title": "Too Many Requests"})] * 3
    ctx = XContext(stop_after_reconnects=3)
    run_until_stopped(make_source(fake), ctx)
    assert ctx.delays() == pytest.approx([60, 120, 240], rel=TOLERANCE)
    assert "Too Many Requests" in ctx.reconnects[0][2]


def test_401_names_the_token_and_backs_off_long_without_leaking_it(fake: FakeX, caplog: pytest.LogCaptureFixture) -> None:
    """A refused token: reason http_401 with a message naming the token, a long backoff, the token in no report or log."""
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-VERY-SECRET-0987654321"
    ctx = XContext(stop_after_reconnects=3)
    run_until_stopped(make_source(fake, bearer_token=wrong), ctx)
    assert [r for r, _, _, _ in ctx.reconnects] == ["http_401"] * 3
    assert ctx.delays() == pytest.approx([60, 120, 240], rel=TOLERANCE)
    assert "X_BEARER_TOKEN" in ctx.reconnects[0][2]
    assert wrong not in ctx.everything_reported() and wrong not in caplog.text
    assert wrong not in repr(XSourceConfig(bearer_token=wrong)) and wrong not in str(
        XSourceConfig(bearer_token=wrong).model_dump()
    )


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
    ctx = XContext(stop_after_reconnects=3)
    run_until_stopped(make_source(fake), ctx)
    assert len(ctx.reconnects) == 3
    assert fake.token not in ctx.everything_reported() and fake.token not in caplog.text


def test_a_stall_is_caught_by_the_read_clock_within_10_percent(fake: FakeX) -> None:
    """No byte for stall_timeout (here 0.5 s, X's 20 s scaled) is a stall: reconnect (at once after tweets)."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1)))])]  # then silent: a full-buffer disconnect looks like this
    ctx = XContext(stop_after_reconnects=1)
    start = time.monotonic()
    run_until_stopped(make_source(fake, stall_timeout=0.5), ctx)
    reason, delay, _, at = ctx.reconnects[0]
    assert (reason, delay) == ("stall", 0.0)
    assert ctx.emitted, "the tweet before the silence arrived"
    assert 0.5 <= at - start <= 0.5 * (1 + TOLERANCE) + 0.1  # plus connect and rule-sync time on a loaded machine


def test_keep_alives_keep_a_quiet_stream_from_stalling(fake: FakeX) -> None:
    """Keep-alives more often than stall_timeout: no reconnect, however long no tweet comes."""
    fake.scripts = [
        StreamScript(steps=[s for _ in range(12) for s in (Send(KEEPALIVE), Pause(0.1))] + [Send(lines(tweet_line(1)))])
    ]
    ctx = XContext(stop_after_emits=1)
    run_until_stopped(make_source(fake, stall_timeout=0.4), ctx)
    assert ctx.reconnects == [] and len(ctx.emitted) == 1


def test_in_band_operational_disconnect_ends_the_connection(fake: FakeX) -> None:
    """An `errors[]` line with disconnect_type is counted as a protocol message, and the source reconnects."""
    disconnect = {
        "errors": [
            {
                "title": "operational-disconnect",
                "disconnect_type": "OperationalDisconnect",
                "detail": "bye",
                "type": "https://api.x.com/2/problems/operational-disconnect",
            }
        ]
    }
    gate = threading.Event()
    fake.scripts = [
        StreamScript(steps=[Send(lines(tweet_line(1), json.dumps(disconnect).encode())), Until(gate)]),
        StreamScript(steps=[Send(lines(tweet_line(2)))]),
    ]
    ctx = XContext(stop_after_emits=2)
    run_until_stopped(make_source(fake), ctx)
    gate.set()
    assert ("OperationalDisconnect", "operational-disconnect; OperationalDisconnect; bye") in ctx.messages
    assert [(r, d) for r, d, _, _ in ctx.reconnects] == [("in_band_disconnect", 0.0)]
    assert len(fake.stream_connects()) == 2 and len(ctx.emitted) == 2


def test_too_many_connections_waits_on_the_http_schedule(fake: FakeX) -> None:
    """`connection_issue: TooManyConnections` ends the connection and is never retried at once."""
    issue = json.dumps({"errors": [{"title": "ConnectionException", "connection_issue": "TooManyConnections"}]}).encode()
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1), issue))]), StreamScript(steps=[Send(lines(issue))])]
    ctx = XContext(stop_after_reconnects=2)
    run_until_stopped(make_source(fake), ctx)
    assert [kind for kind, _ in ctx.messages].count("TooManyConnections") == 2
    assert [(r, d) for r, d, _, _ in ctx.reconnects] == [("too_many_connections", 5.0), ("too_many_connections", 10.0)]


def test_stop_returns_within_the_stop_timeout_from_a_silent_stream(fake: FakeX) -> None:
    """With the default 22 s stall clock and a silent connection, stop ends `run` within about a second."""
    ctx = XContext()
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
    ctx = XContext(real_waits=True)
    thread = run_in_thread(make_source(fake), ctx)
    poll_until(lambda: ctx.reconnects, DEADLINE_S, "a reconnect wait")
    started = time.monotonic()
    ctx.stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 1.5


def test_app_key_and_secret_are_exchanged_for_a_token(fake: FakeX) -> None:
    """consumer_key/secret: POST /oauth2/token (client credentials), then the stream with the token it returned."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1)))])]
    ctx = XContext(stop_after_emits=1)
    source = XSource(XSourceConfig(consumer_key=fake.consumer_key, consumer_secret=fake.consumer_secret, api_url=fake.url))
    run_until_stopped(source, ctx)
    assert len(fake.calls("POST", "/oauth2/token")) == 1 and len(ctx.emitted) == 1


def test_a_refused_app_secret_is_an_auth_failure(fake: FakeX, caplog: pytest.LogCaptureFixture) -> None:
    """A refused key/secret: http_403 on the long schedule; neither secret shows anywhere."""
    caplog.set_level(logging.DEBUG)
    ctx = XContext(stop_after_reconnects=1)
    secret = "not-the-secret-XYZ123"  # noqa: S105 - a dummy
    run_until_stopped(XSource(XSourceConfig(consumer_key="k", consumer_secret=secret, api_url=fake.url)), ctx)
    assert [(r, d) for r, d, _, _ in ctx.reconnects] == [("http_403", 60.0)]
    assert secret not in ctx.everything_reported() and secret not in caplog.text


def test_clear_stale_connections_calls_the_connections_api_first(fake: FakeX) -> None:
    """clear_stale_connections: DELETE /2/connections/all before the stream connects."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1)))])]
    ctx = XContext(stop_after_emits=1)
    run_until_stopped(make_source(fake, clear_stale_connections=True), ctx)
    deletes = fake.calls("DELETE", "/2/connections/all")
    assert len(deletes) == 1 and deletes[0].at < fake.stream_connects()[0].at


def test_sample_stream_and_backfill(fake: FakeX) -> None:
    """stream: sample connects to /2/tweets/sample/stream (no rule calls) and passes backfill_minutes."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1)))])]
    ctx = XContext(stop_after_emits=1)
    run_until_stopped(make_source(fake, stream="sample", rules=[], backfill_minutes=2), ctx)
    connect = fake.stream_connects()[0]
    assert connect.path == "/2/tweets/sample/stream" and connect.query["backfill_minutes"] == ["2"]
    assert fake.calls("GET", "/2/tweets/search/stream/rules") == []
    assert ctx.emitted[0][2] == "x:sample"


def test_rules_endpoint_errors_back_off_like_http_errors(fake: FakeX) -> None:
    """A 503 from the rules endpoint at start is retried on the HTTP schedule, then the stream starts."""
    fake.rules_status = 503
    ctx = XContext(stop_after_reconnects=2)
    run_until_stopped(make_source(fake), ctx)
    assert ctx.delays() == pytest.approx([5, 10], rel=TOLERANCE)
    assert fake.stream_connects() == []


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
