"""The jetstream source against fake Jetstream servers: filters, cursor resume, failover, backoff, stall, stop."""

from __future__ import annotations

import random
import select
import socket
import time
from typing import Any

import pytest
from pydantic import ValidationError

from sources.jetstream import OPEN_TIMEOUT_S, JetstreamSource, JetstreamSourceConfig
from tests.fake_jetstream import (
    STOP_BUDGET_S,
    FakeJetstream,
    Plan,
    commit_event,
    encode,
    jetstream,
    jetstream_context,
    rkeys,
    run_until,
)

SECOND_US = 1_000_000
BASE_US = 1_764_000_000 * SECOND_US
# daemon/app.py _SOURCE_STOP_TIMEOUT_S: how long the daemon waits for a source to end.
DAEMON_STOP_TIMEOUT_S = 5.0


def posts(count: int, start: int = 0) -> list[dict[str, Any]]:
    """`count` posts one second apart (in time_us), rkeys p<start>..."""
    return [commit_event(BASE_US + i * SECOND_US, f"p{i}", text=f"post {i} 🦋") for i in range(start, start + count)]


def test_posts_flow_with_the_filters_in_the_url() -> None:
    """Each post is emitted once as the exact bytes sent; collections, dids and the size limit are query params."""
    events = posts(5)
    with FakeJetstream(events) as server:
        ctx = jetstream_context()
        source = jetstream(
            [server.url],
            wanted_collections=["app.bsky.feed.post", "app.bsky.feed.like"],
            wanted_dids=["did:plc:alice"],
            max_message_size_bytes=4096,
        )
        run_until(source, ctx, lambda: len(ctx.emitted) >= 5, "five posts")
        query = server.queries[0]
    assert [data for data, _, _ in ctx.emitted] == [encode(e) for e in events]
    assert ctx.emitted[0][2] == f"jetstream:{server.host}:{BASE_US}"
    assert query["wantedCollections"] == ["app.bsky.feed.post", "app.bsky.feed.like"]
    assert query["wantedDids"] == ["did:plc:alice"]
    assert query["maxMessageSizeBytes"] == ["4096"]
    assert "cursor" not in query and "compress" not in query
    assert source.position() == BASE_US + 4 * SECOND_US
    assert ctx.connections[0] == (True, server.host)
    assert not ctx.rejected and not ctx.reconnects


def test_a_configured_cursor_is_sent_on_the_first_connection() -> None:
    """`cursor` in the config starts the replay there: the server is asked for it and only later events come."""
    with FakeJetstream(posts(6)) as server:
        ctx = jetstream_context()
        run_until(jetstream([server.url], cursor=BASE_US + 3 * SECOND_US), ctx, lambda: len(ctx.emitted) >= 3, "3 posts")
        assert server.queries[0]["cursor"] == [str(BASE_US + 3 * SECOND_US)]
    assert rkeys(ctx) == ["p3", "p4", "p5"]


@pytest.mark.parametrize("then", ["close", "drop"])
def test_resume_after_a_disconnect_rewinds_and_drops_duplicates(then: str) -> None:
    """After a disconnect the cursor is last time_us - rewind; the replayed events are dropped: no gap, no duplicate."""
    events = posts(10)
    with FakeJetstream(events) as server:
        server.plans.append(Plan(send=4, then=then, close_code=1011))  # type: ignore[arg-type]
        ctx = jetstream_context()
        run_until(jetstream([server.url], rewind=2.5), ctx, lambda: len(ctx.emitted) >= 10, "all ten posts")
        resumed = server.queries[1]
    assert rkeys(ctx) == [f"p{i}" for i in range(10)]
    # Last handed over p3 (BASE+3 s); rewound by 2.5 s the server replays p1..p3 again, which are dropped.
    assert resumed["cursor"] == [str(BASE_US + 3 * SECOND_US - 2_500_000)]
    assert [kind for kind, _ in ctx.protocol_messages] == ["duplicate"] * 3
    assert [r[0] for r in ctx.reconnects] == ["server_error" if then == "close" else "network"]


def test_failover_to_the_next_instance_after_repeated_failures() -> None:
    """An instance that refuses `failover_after` times in a row is left for the next, which then serves."""
    with FakeJetstream() as broken, FakeJetstream(posts(3)) as healthy:
        for _ in range(10):
            broken.plans.append(Plan(status=503))
        ctx = jetstream_context()
        run_until(jetstream([broken.url, healthy.url], failover_after=3), ctx, lambda: len(ctx.emitted) >= 3, "3 posts")
        attempts_on_broken = len(broken.queries)
    assert attempts_on_broken == 3
    assert [r[0] for r in ctx.reconnects] == ["http_503"] * 3
    assert "failing over to" in ctx.reconnects[-1][2]
    assert rkeys(ctx) == ["p0", "p1", "p2"]


def test_failover_wraps_around_and_keeps_the_cursor() -> None:
    """With both instances failing in turn, the source cycles back to the first and resumes from its cursor."""
    with FakeJetstream(posts(6)) as first, FakeJetstream(posts(6)) as second:
        first.plans.extend([Plan(send=2, then="close", close_code=1011), Plan(), Plan()])
        second.plans.extend([Plan(status=500)])
        ctx = jetstream_context()
        source = jetstream([first.url, second.url], failover_after=1, rewind=0)
        run_until(source, ctx, lambda: len(ctx.emitted) >= 6, "6 posts")
        assert len(second.queries) == 1 and first.connections == 2
        assert first.queries[1]["cursor"] == [str(BASE_US + SECOND_US)]
    assert rkeys(ctx) == [f"p{i}" for i in range(6)]


def test_backoff_doubles_with_jitter_and_resets_after_messages() -> None:
    """Delays are drawn from [d/2, d] of a doubling schedule (capped), and start over once messages arrive."""
    with FakeJetstream(posts(1)) as server:
        for _ in range(6):
            server.plans.append(Plan(status=502))
        server.plans.append(Plan(then="close", close_code=1011))
        server.plans.append(Plan(status=502))
        ctx = jetstream_context()
        config = JetstreamSourceConfig(instances=[server.url], initial_backoff=1.0, max_backoff=8.0, failover_after=100)
        source = JetstreamSource(config, rng=random.Random(7))
        run_until(source, ctx, lambda: len(ctx.reconnects) >= 8, "eight reconnects")
    delays = [delay for _, delay, _ in ctx.reconnects]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8], strict=False):
        assert nominal / 2 <= delay <= nominal
    assert len(set(delays[3:6])) == 3, "jitter makes equal nominal delays differ"
    # The 7th connection delivered a message, so its close and the next refusal start from 1 s again.
    assert 0.5 <= delays[6] <= 1.0 and 1.0 <= delays[7] <= 2.0
    assert ctx.wait_requests[: len(delays)] == delays


def test_a_stalled_connection_is_renewed_and_resumed() -> None:
    """No message for `stall_timeout` seconds: reconnect (reason stall) from the cursor; nothing missed."""
    with FakeJetstream(posts(6)) as server:
        server.plans.append(Plan(send=3, then="stall"))
        ctx = jetstream_context()
        started = time.monotonic()
        run_until(jetstream([server.url], stall_timeout=0.6), ctx, lambda: len(ctx.emitted) >= 6, "6 posts")
    assert time.monotonic() - started >= 0.6
    assert [r[0] for r in ctx.reconnects] == ["stall"]
    assert rkeys(ctx) == [f"p{i}" for i in range(6)]


def test_a_stall_is_measured_on_the_injected_clock() -> None:
    """The stall rule reads the injected clock: a clock that jumps past the timeout triggers it at the next poll."""
    now = [0.0]

    def clock() -> float:
        now[0] += 30.0  # every look is 30 s later
        return now[0]

    with FakeJetstream(posts(2)) as server:
        server.plans.append(Plan(then="stall"))
        ctx = jetstream_context()
        config = JetstreamSourceConfig(instances=[server.url], stall_timeout=45, initial_backoff=0.01, max_backoff=0.01)
        run_until(JetstreamSource(config, clock=clock), ctx, lambda: ctx.reconnects, "a stall reconnect")
    assert ctx.reconnects[0][0] == "stall"


@pytest.mark.parametrize(
    ("code", "reason"), [(1000, "server_closed"), (1001, "server_closed"), (1011, "server_error"), (4000, "server_error")]
)
def test_close_codes_name_the_reconnect_reason(code: int, reason: str) -> None:
    """A server close is a reconnect counted by class, its code and text in the detail; the stream goes on."""
    with FakeJetstream(posts(4)) as server:
        server.plans.append(Plan(send=2, then="close", close_code=code, close_reason="maintenance"))
        ctx = jetstream_context()
        run_until(jetstream([server.url]), ctx, lambda: len(ctx.emitted) >= 4, "4 posts")
    assert ctx.reconnects[0][0] == reason
    assert f"code {code} 'maintenance'" in ctx.reconnects[0][2]
    assert rkeys(ctx) == ["p0", "p1", "p2", "p3"]
    assert [c for c, _ in ctx.connections] == [True, False, True, False]


def test_nothing_listening_is_a_network_failure() -> None:
    """Connection refused: reason network, with backoff, never a crash."""
    with FakeJetstream() as server:
        url = server.url
    ctx = jetstream_context()
    run_until(jetstream([url]), ctx, lambda: len(ctx.reconnects) >= 3, "three reconnects")
    assert {r[0] for r in ctx.reconnects} == {"network"}


@pytest.mark.parametrize("where", ["streaming", "stalled", "backing_off"])
def test_stop_is_noticed_within_the_budget(where: str) -> None:
    """Stopping while reading, on a silent connection or in a long backoff ends `run` well within 5 s."""
    with FakeJetstream(posts(3)) as server:
        if where == "stalled":
            server.plans.append(Plan(then="stall"))
        if where == "backing_off":
            server.plans.append(Plan(status=503))
        ctx = jetstream_context(max_wait_s=3600)
        source = jetstream([server.url], initial_backoff=600, max_backoff=600)
        ready = (lambda: ctx.reconnects) if where == "backing_off" else (lambda: len(ctx.emitted) >= 3)
        took = run_until(source, ctx, ready, where)
    assert took < STOP_BUDGET_S


def test_stop_during_a_hanging_handshake_ends_within_the_daemon_budget() -> None:
    """A server that takes the TCP connection but never answers the upgrade does not delay a stop."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections queue in the kernel and are never accepted: the handshake hangs
        port = listener.getsockname()[1]
        ctx = jetstream_context(max_wait_s=3600)
        source = jetstream([f"ws://127.0.0.1:{port}/subscribe"])
        took = run_until(
            source, ctx, lambda: select.select([listener], [], [], 0)[0], "a pending connection", DAEMON_STOP_TIMEOUT_S
        )
    assert took < STOP_BUDGET_S < OPEN_TIMEOUT_S


def test_config_rejects_bad_urls_and_too_many_filters() -> None:
    """Instances must be ws(s) URLs without a query; Jetstream's filter limits are enforced in the config."""
    with pytest.raises(ValidationError, match="not a ws"):
        JetstreamSourceConfig(instances=["https://jetstream.example/subscribe"])
    with pytest.raises(ValidationError, match="not in the URL"):
        JetstreamSourceConfig(instances=["wss://j.example/subscribe?wantedCollections=x"])
    with pytest.raises(ValidationError):
        JetstreamSourceConfig(wanted_collections=[f"c{i}" for i in range(101)])
    with pytest.raises(ValidationError):
        JetstreamSourceConfig(wanted_dids=[""])
    assert JetstreamSourceConfig().wanted_collections == ["app.bsky.feed.post"]
    assert all(u.startswith("wss://jetstream") for u in JetstreamSourceConfig().instances)


def test_a_crash_while_emitting_is_resumed_without_losing_that_post() -> None:
    """`run` restarted after emit raised (as the supervisor does) resumes from the cursor and hands that post over."""
    with FakeJetstream(posts(5)) as server:
        ctx = jetstream_context(crash_after_emits=2)  # the third emit raises, once
        source = jetstream([server.url], rewind=10)
        with pytest.raises(OSError, match="disk hiccup"):
            source.run(ctx)
        assert source.position() == BASE_US + SECOND_US
        run_until(source, ctx, lambda: len(ctx.emitted) >= 5, "the rest after the restart")
        assert server.queries[1]["cursor"] == [str(BASE_US + SECOND_US - 10 * SECOND_US)]
    assert rkeys(ctx) == [f"p{i}" for i in range(5)]
