"""Source `x`: every reconnect rule X documents, against the fake X (delays recorded, timings within 10 %)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import pytest

from sources.x import XSourceConfig
from tests.conftest import free_port
from tests.fake_x import KEEPALIVE, Close, FakeX, Pause, Reset, Send, StreamScript, Until, tweet_line
from tests.sources.test_x_support import (
    TOLERANCE,
    lines,
    make_source,
    run_until_stopped,
    serve_fake_x,
    x_context,
)


@pytest.fixture
def fake() -> Iterator[FakeX]:
    yield from serve_fake_x()


def test_a_drop_after_records_reconnects_at_once_then_backs_off_linearly(fake: FakeX) -> None:
    """Closed after tweets: one reconnect at once; further drops without tweets: +250 ms each (X's TCP rule)."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1))), Close()])] + [StreamScript(steps=[Close()])] * 3
    ctx = x_context(stop_after_reconnects=4)
    run_until_stopped(make_source(fake), ctx)
    assert [r for r, _, _ in ctx.reconnects] == ["closed"] * 4
    assert ctx.reconnect_delays() == pytest.approx([0.0, 0.25, 0.5, 0.75], rel=TOLERANCE)


def test_a_reset_mid_stream_reconnects_at_once(fake: FakeX) -> None:
    """A TCP reset after tweets is a drop: reconnect at once, and the next connection flows again."""
    fake.scripts = [
        StreamScript(steps=[Send(lines(tweet_line(1))), Pause(0.1), Reset()]),
        StreamScript(steps=[Send(lines(tweet_line(2)))]),
    ]
    ctx = x_context(stop_after_emits=2)
    run_until_stopped(make_source(fake), ctx)
    assert [d for d, _, _ in ctx.emitted] == [tweet_line(1), tweet_line(2)]
    assert [(r, d) for r, d, _ in ctx.reconnects] == [("network", 0.0)]


def test_network_errors_back_off_linearly_up_to_16_s(fake: FakeX) -> None:
    """Connection refused: 0.25, 0.5, 0.75 ... seconds, capped at 16 s."""
    ctx = x_context(stop_after_reconnects=70)
    run_until_stopped(make_source(fake, api_url=f"http://127.0.0.1:{free_port()}", rules=[]), ctx, timeout=30)
    delays = ctx.reconnect_delays()
    assert delays[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0], rel=TOLERANCE)
    assert max(delays) == pytest.approx(16.0) and delays[-1] == pytest.approx(16.0)
    assert {r for r, _, _ in ctx.reconnects} == {"network"}


def test_twitterapi_own_unthrottled_error_logs_are_dropped(fake: FakeX, caplog: pytest.LogCaptureFixture) -> None:
    """TwitterAPI logs each connection error on the root logger; the source reports them itself, so none reach the logs."""
    caplog.set_level(logging.DEBUG)
    ctx = x_context(stop_after_reconnects=3)
    run_until_stopped(make_source(fake, api_url=f"http://127.0.0.1:{free_port()}", rules=[]), ctx)
    assert len(ctx.reconnects) == 3
    assert [r.pathname for r in caplog.records if "TwitterAPI" in r.pathname] == []


def test_http_errors_back_off_exponentially_from_5_s_to_320_s(fake: FakeX) -> None:
    """503 on connect: 5, 10, 20 ... 320, 320 seconds."""
    fake.scripts = [StreamScript(status=503)] * 8
    ctx = x_context(stop_after_reconnects=8)
    run_until_stopped(make_source(fake), ctx)
    assert ctx.reconnect_delays() == pytest.approx([5, 10, 20, 40, 80, 160, 320, 320], rel=TOLERANCE)
    assert ctx.wait_requests == ctx.reconnect_delays()  # the announced delay is the one waited
    assert {r for r, _, _ in ctx.reconnects} == {"http_503"}


def test_429_backs_off_exponentially_from_a_minute(fake: FakeX) -> None:
    """429 on connect: 60, 120, 240 seconds."""
    fake.scripts = [StreamScript(status=429, body={"title": "Too Many Requests"})] * 3
    ctx = x_context(stop_after_reconnects=3)
    run_until_stopped(make_source(fake), ctx)
    assert ctx.reconnect_delays() == pytest.approx([60, 120, 240], rel=TOLERANCE)
    assert ctx.wait_requests == ctx.reconnect_delays()
    assert "Too Many Requests" in ctx.reconnects[0][2]


def test_401_names_the_token_and_backs_off_long_without_leaking_it(fake: FakeX, caplog: pytest.LogCaptureFixture) -> None:
    """A refused token: reason http_401 with a message naming the token, a long backoff, the token in no report or log."""
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-VERY-SECRET-0987654321"
    ctx = x_context(stop_after_reconnects=3)
    run_until_stopped(make_source(fake, bearer_token=wrong), ctx)
    assert [r for r, _, _ in ctx.reconnects] == ["http_401"] * 3
    assert ctx.reconnect_delays() == pytest.approx([60, 120, 240], rel=TOLERANCE)
    assert "X_BEARER_TOKEN" in ctx.reconnects[0][2]
    assert wrong not in ctx.everything_said() and wrong not in caplog.text
    assert wrong not in repr(XSourceConfig(bearer_token=wrong)) and wrong not in str(
        XSourceConfig(bearer_token=wrong).model_dump()
    )


def test_a_stall_is_caught_by_the_read_clock_within_10_percent(fake: FakeX) -> None:
    """No byte for stall_timeout (here 1 s, X's 20 s scaled) is a stall, caught within 10 %: reconnect (at once after tweets)."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1)))])]  # then silent: a full-buffer disconnect looks like this
    ctx = x_context(stop_after_reconnects=1)
    run_until_stopped(make_source(fake, stall_timeout=1.0), ctx)
    (reason, delay, _), at = ctx.reconnects[0], ctx.reconnected_at[0]
    assert (reason, delay) == ("stall", 0.0)
    assert len(ctx.emitted_at) == 1, "the tweet before the silence arrived"
    assert 1.0 <= at - ctx.emitted_at[0] <= 1.0 * (1 + TOLERANCE)


def test_keep_alives_keep_a_quiet_stream_from_stalling(fake: FakeX) -> None:
    """Keep-alives more often than stall_timeout: no reconnect, however long no tweet comes."""
    fake.scripts = [
        StreamScript(steps=[s for _ in range(12) for s in (Send(KEEPALIVE), Pause(0.1))] + [Send(lines(tweet_line(1)))])
    ]
    ctx = x_context(stop_after_emits=1)
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
    ctx = x_context(stop_after_emits=2)
    run_until_stopped(make_source(fake), ctx)
    gate.set()
    assert ("OperationalDisconnect", "operational-disconnect; OperationalDisconnect; bye") in ctx.protocol_messages
    assert [(r, d) for r, d, _ in ctx.reconnects] == [("in_band_disconnect", 0.0)]
    assert len(fake.stream_connects()) == 2 and len(ctx.emitted) == 2


def test_too_many_connections_waits_on_the_http_schedule(fake: FakeX) -> None:
    """`connection_issue: TooManyConnections` ends the connection and is never retried at once."""
    issue = json.dumps({"errors": [{"title": "ConnectionException", "connection_issue": "TooManyConnections"}]}).encode()
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1), issue))]), StreamScript(steps=[Send(lines(issue))])]
    ctx = x_context(stop_after_reconnects=2)
    run_until_stopped(make_source(fake), ctx)
    assert [kind for kind, _ in ctx.protocol_messages].count("TooManyConnections") == 2
    assert [(r, d) for r, d, _ in ctx.reconnects] == [("too_many_connections", 5.0), ("too_many_connections", 10.0)]


def test_rules_endpoint_errors_back_off_like_http_errors(fake: FakeX) -> None:
    """A 503 from the rules endpoint at start is retried on the HTTP schedule, then the stream starts."""
    fake.rules_status = 503
    ctx = x_context(stop_after_reconnects=2)
    run_until_stopped(make_source(fake), ctx)
    assert ctx.reconnect_delays() == pytest.approx([5, 10], rel=TOLERANCE)
    assert fake.stream_connects() == []


def test_a_line_cut_short_by_a_stall_is_dead_lettered(fake: FakeX) -> None:
    """Half a line, then silence: the stall ends the connection and the half line is dead-lettered, not dropped."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1)) + tweet_line(2)[:20])])]
    ctx = x_context(stop_after_reconnects=1)
    run_until_stopped(make_source(fake, stall_timeout=0.3), ctx)
    assert [d for d, _, _ in ctx.emitted] == [tweet_line(1)]
    assert [(d, o, r) for d, o, r, _ in ctx.rejected] == [(tweet_line(2)[:20], "x:filtered", "truncated_line")]


def test_only_connection_changes_are_reported_not_each_failed_attempt(fake: FakeX) -> None:
    """Refused connects are counted as reconnects; `connection` reports only up, down, up (its log is not throttled)."""
    fake.scripts = [StreamScript(steps=[Send(lines(tweet_line(1))), Close()]), *[StreamScript(status=503)] * 3]
    fake.scripts.append(StreamScript(steps=[Send(lines(tweet_line(2)))]))
    ctx = x_context(stop_after_emits=2)
    run_until_stopped(make_source(fake), ctx)
    assert [r for r, _, _ in ctx.reconnects] == ["closed", "http_503", "http_503", "http_503"]
    assert [up for up, _ in ctx.connections] == [True, False, True]


def test_a_refused_rules_listing_is_an_http_failure_not_an_empty_rule_set(fake: FakeX) -> None:
    """A 400 on the rules listing backs off like any HTTP error; it is not read as 'no rules' nor as a rejected rule."""
    fake.rules_status = 400
    ctx = x_context(stop_after_reconnects=1)
    run_until_stopped(make_source(fake), ctx)
    assert [(r, d) for r, d, _ in ctx.reconnects] == [("http_400", 5.0)]
    assert fake.calls("POST", "/2/tweets/search/stream/rules") == []
    assert not any(k == "rule_rejected" for k, _ in ctx.protocol_messages)
