"""The mastodon source against a real fake Mastodon server: timelines, deletes, heartbeats, bad payloads, stop."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from tests.conftest import poll_until
from tests.fake_mastodon import (
    CLOSE,
    DROP,
    HEARTBEAT,
    HOLD,
    STREAM_PREFIX,
    TOKEN,
    FakeMastodon,
    Pause,
    Plan,
    config,
    mastodon_context,
    sse,
    start,
    status,
    status_ids,
)
from tests.fakes import RecordingContext


@pytest.fixture
def fake() -> Iterator[FakeMastodon]:
    with FakeMastodon() as server:
        yield server


def update(status_id: str, **fields: Any) -> bytes:
    return sse("update", json.dumps(status(status_id, **fields), separators=(",", ":")))


def test_public_timeline_emits_each_status_as_sent(fake: FakeMastodon) -> None:
    """Statuses arrive byte for byte, from the discovered streaming host, with the bearer token and a named origin."""
    payloads = [json.dumps(status(str(n), text=f"toot {n} 🚀"), ensure_ascii=False).encode() for n in (101, 102)]
    fake.plan(Plan([sse("update", p) for p in payloads] + [HOLD]))
    run = start(fake)
    run.until("two statuses", lambda: len(run.ctx.emitted) == 2)
    run.stop()
    assert [d for d, _, _ in run.ctx.emitted] == payloads
    assert run.ctx.emitted[0][1]["account"]["acct"] == "alice"
    port = fake.base_url.rsplit(":", 1)[1]
    assert run.ctx.emitted[1][2] == f"mastodon:127.0.0.1:{port}:public:2:102"
    (request,) = fake.stream_requests()
    assert request.path == STREAM_PREFIX + "/api/v1/streaming/public"  # from configuration.urls.streaming
    assert request.query == {}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert run.ctx.connections[0][0] is True


@pytest.mark.parametrize(
    ("overrides", "path", "query"),
    [
        ({"timeline": "local"}, "/api/v1/streaming/public/local", {}),
        ({"timeline": "public", "only_media": True}, "/api/v1/streaming/public", {"only_media": ["true"]}),
        ({"timeline": "local", "only_media": True}, "/api/v1/streaming/public/local", {"only_media": ["true"]}),
        ({"timeline": "hashtag", "hashtag": "#Python"}, "/api/v1/streaming/hashtag", {"tag": ["Python"]}),
    ],
    ids=["local", "public-media", "local-media", "hashtag"],
)
def test_each_timeline_kind_asks_for_its_path_and_query(
    fake: FakeMastodon, overrides: dict[str, Any], path: str, query: dict[str, list[str]]
) -> None:
    """Each timeline kind streams from its own endpoint and query, and its statuses are emitted."""
    fake.plan(Plan([update("7"), HOLD]))
    run = start(fake, **overrides)
    run.until("a status", lambda: run.ctx.emitted)
    run.stop()
    (request,) = fake.stream_requests()
    assert (request.path, request.query) == (STREAM_PREFIX + path, query)
    assert status_ids(run.ctx) == ["7"]


@pytest.mark.parametrize("instance_status", [200, 404])
def test_without_a_streaming_url_the_instance_itself_streams(instance_status: int) -> None:
    """An instance API naming no streaming URL (or failing) means streaming from the instance; the failure is counted."""
    with FakeMastodon(instance_status=instance_status, streaming_in_instance=False) as fake:
        fake.plan(Plan([update("1"), HOLD]))
        run = start(fake)
        run.until("a status", lambda: run.ctx.emitted)
        run.stop()
    assert fake.stream_requests()[0].path == "/api/v1/streaming/public"
    assert [k for k, _ in run.ctx.protocol_messages] == ["instance_discovery_failed"]


def test_delete_events_become_delete_records(fake: FakeMastodon) -> None:
    """A delete names the status, the instance and (when this run saw the status) its author; a bad one is rejected."""
    fake.plan(
        Plan([update("5", acct="bob@remote.example"), sse("delete", "5"), sse("delete", "99"), sse("delete", "not an id!"), HOLD])
    )
    run = start(fake)
    run.until("three records", lambda: len(run.ctx.emitted) == 3)
    run.until("a rejection", lambda: run.ctx.rejected)
    run.stop()
    host = fake.base_url.removeprefix("http://")
    deletes = [(json.loads(d), e) for d, e, _ in run.ctx.emitted[1:]]
    assert deletes[0][0] == deletes[0][1] == {"event": "delete", "id": "5", "instance": host, "acct": "bob@remote.example"}
    assert deletes[1][0] == {"event": "delete", "id": "99", "instance": host}
    assert run.ctx.emitted[1][2].endswith(":delete:5")
    assert [(r[0], r[2]) for r in run.ctx.rejected] == [(b"not an id!", "invalid_delete")]


def test_edits_are_records_and_other_events_are_counted(fake: FakeMastodon) -> None:
    """status.update (an edit of a status already sent) is emitted again; notifications and unknown kinds are counted."""
    edited = json.dumps(status("5", text="edited"))
    fake.plan(Plan([update("5"), sse("status.update", edited), sse("notification", "{}"), sse("weird.kind", "{}"), HOLD]))
    run = start(fake)
    run.until("two counted events", lambda: len(run.ctx.protocol_messages) == 2)
    run.stop()
    assert status_ids(run.ctx) == ["5", "5"]
    assert run.ctx.emitted[1][0] == edited.encode()
    assert [k for k, _ in run.ctx.protocol_messages] == ["event_notification", "event_other"]


def test_heartbeats_keep_a_quiet_stream_alive(fake: FakeMastodon) -> None:
    """Heartbeats every 0.1 s for 1.5 s keep a 0.5 s stall clock from firing: one connection, no reconnect."""
    fake.plan(Plan([update("1")] + [Pause(0.1), HEARTBEAT] * 15 + [update("2"), HOLD]))
    run = start(fake, stall_timeout=0.5)
    run.until("the status after the heartbeats", lambda: len(run.ctx.emitted) == 2)
    run.stop()
    assert run.ctx.reconnects == []
    assert len(fake.stream_requests()) == 1


class SlowBufferContext(RecordingContext):
    """The first emit blocks as a full buffer would."""

    def emit(self, data: bytes, event: Any, origin: str, token: Any = None) -> bool:
        if not self.emitted:
            self.stop.wait(1.0)
        return super().emit(data, event, origin)


def test_time_blocked_on_a_full_buffer_is_not_a_stall(fake: FakeMastodon) -> None:
    """The stall clock (0.8 s) runs while the source listens, not while emit blocks (1 s) on a full buffer."""
    fake.plan(Plan([update("1"), Pause(1.3), update("2"), HOLD]))
    run = start(fake, SlowBufferContext(name="mastodon"), stall_timeout=0.8)
    run.until("both statuses", lambda: len(run.ctx.emitted) == 2)
    run.stop()
    assert run.ctx.reconnects == []


def test_a_stall_reconnects(fake: FakeMastodon) -> None:
    """A stream silent for longer than stall_timeout is dropped and reopened; statuses flow again."""
    fake.plan(Plan([update("1"), HOLD]), Plan([update("2"), HOLD]))
    run = start(fake, stall_timeout=0.3, backfill_pages=0)
    run.until("the status from the second connection", lambda: len(run.ctx.emitted) == 2)
    run.stop()
    assert [r for r, _, _ in run.ctx.reconnects] == ["stall"]
    assert "no data or heartbeat" in run.ctx.reconnects[0][2]
    assert len(fake.stream_requests()) == 2
    port = fake.base_url.rsplit(":", 1)[1]
    assert [c for c, _ in run.ctx.connections[:3]] == [True, False, True]
    assert run.ctx.connections[0][1] == f"127.0.0.1:{port} public"


def test_failures_back_off_exponentially_with_jitter_and_reset_after_data(fake: FakeMastodon) -> None:
    """Streams that end without an event wait 0.05, 0.1, 0.2, 0.4, 0.4 s (each jittered into [d/2, d]); an event resets it."""
    fake.plan(
        *[Plan([CLOSE]), Plan([DROP])] * 2, Plan([CLOSE]), Plan([update("1"), CLOSE]), Plan([CLOSE]), Plan([update("2"), HOLD])
    )
    run = start(fake, reconnect_initial=0.05, reconnect_max=0.4)
    run.until("both statuses", lambda: len(run.ctx.emitted) == 2)
    run.stop()
    reasons = [r for r, _, _ in run.ctx.reconnects]
    assert reasons == ["closed", "network", "closed", "network", "closed", "closed", "closed"]
    delays = [d for _, d, _ in run.ctx.reconnects]
    nominal = [0.05, 0.1, 0.2, 0.4, 0.4, 0.05, 0.1]  # the 6th follows a connection that delivered a status
    for delay, top in zip(delays, nominal, strict=True):
        assert top / 2 <= delay <= top
    assert len(set(delays)) == len(delays), "jittered delays differ"
    assert run.ctx.wait_requests[: len(delays)] == delays


def test_401_is_a_clear_error_with_the_long_backoff(fake: FakeMastodon) -> None:
    """A refused token is reported as such, retried after auth_backoff (not the network schedule), the token masked."""
    fake.plan(Plan(status=401, body={"error": f"The access token {TOKEN} is invalid"}), Plan([update("1"), HOLD]))
    run = start(fake, auth_backoff=0.4)
    run.until("a status after the 401", lambda: run.ctx.emitted)
    run.stop()
    ((reason, delay, detail),) = run.ctx.reconnects
    assert reason == "http_401"
    assert 0.2 <= delay <= 0.4
    assert "access token was refused" in detail
    assert "The access token <token> is invalid" in detail
    assert TOKEN not in run.ctx.everything_said()
    assert [c for c, _ in run.ctx.connections] == [True]  # a failed attempt is no disconnection


@pytest.mark.parametrize(
    ("headers", "low", "high"), [({"Retry-After": "1"}, 1.0, 1.0), ({}, 0.15, 0.3)], ids=["retry-after", "no-header"]
)
def test_429_honours_retry_after(fake: FakeMastodon, headers: dict[str, str], low: float, high: float) -> None:
    """429 waits exactly Retry-After when given, else the jittered rate-limit schedule."""
    fake.plan(Plan(status=429, headers=headers), Plan([update("1"), HOLD]))
    run = start(fake, rate_limit_backoff=0.3)
    run.until("a status after the 429", lambda: run.ctx.emitted)
    run.stop()
    ((reason, delay, _),) = run.ctx.reconnects
    assert reason == "http_429"
    assert low <= delay <= high


def test_5xx_and_other_4xx_are_retried(fake: FakeMastodon) -> None:
    """503 takes the network schedule; 404 (e.g. streaming off) the long one; both are retried."""
    fake.plan(Plan(status=503), Plan(status=404), Plan([update("1"), HOLD]))
    run = start(fake, auth_backoff=0.2)
    run.until("a status", lambda: run.ctx.emitted)
    run.stop()
    assert [(r, d <= t) for (r, d, _), t in zip(run.ctx.reconnects, [0.05, 0.2], strict=True)] == [
        ("http_503", True),
        ("http_404", True),
    ]


def test_garbage_payloads_are_dead_lettered_and_the_stream_goes_on(fake: FakeMastodon) -> None:
    """Non-JSON, bad UTF-8, oversize and non-status updates are rejected with origin and reason; good ones flow."""
    big = json.dumps(status("3", text="x" * 2000)).encode()
    fake.plan(
        Plan(
            [
                sse("update", "{not json"),
                sse("update", b'{"id": "1", "content": "caf\xe9"}'),
                sse("update", big),
                sse("update", "[1, 2]"),
                sse("update", '{"id": 12}'),
                update("9"),
                HOLD,
            ]
        )
    )
    run = start(fake, max_event_bytes=1000)
    run.until("the good status", lambda: run.ctx.emitted)
    run.stop()
    port = fake.base_url.rsplit(":", 1)[1]
    assert [(o, r) for _, o, r, _ in run.ctx.rejected] == [
        (f"mastodon:127.0.0.1:{port}:public:1", "invalid_json"),
        (f"mastodon:127.0.0.1:{port}:public:2", "invalid_utf8"),
        (f"mastodon:127.0.0.1:{port}:public:3", "line_too_long"),
        (f"mastodon:127.0.0.1:{port}:public:4", "invalid_status"),
        (f"mastodon:127.0.0.1:{port}:public:5", "invalid_status"),
    ]
    assert run.ctx.rejected[1][0] == b'{"id": "1", "content": "caf\xe9"}'
    assert status_ids(run.ctx) == ["9"]


def test_gap_after_a_reconnect_is_refilled_without_duplicates(fake: FakeMastodon) -> None:
    """After a drop, statuses newer than the last one seen come from the timeline API, oldest first, each once."""
    fake.timeline = [status(str(n)) for n in (10, 11, 12, 13)]
    fake.plan(Plan([update("10"), DROP]), Plan([update("13"), update("14"), HOLD]))
    run = start(fake)
    run.until("statuses up to 14", lambda: len(run.ctx.emitted) >= 5)
    run.stop()
    assert status_ids(run.ctx) == ["10", "11", "12", "13", "14"]
    (refill,) = [r for r in fake.requests if r.path.startswith("/api/v1/timelines/")]
    assert (refill.path, refill.query["min_id"], refill.headers["authorization"]) == (
        "/api/v1/timelines/public",
        ["10"],
        f"Bearer {TOKEN}",
    )
    assert [k for k, _ in run.ctx.protocol_messages] == ["duplicate_status"]
    assert ":backfill:" in run.ctx.emitted[1][2]


@pytest.mark.parametrize(
    ("overrides", "path", "query"),
    [
        ({"timeline": "local", "only_media": True}, "/api/v1/timelines/public", {"local": ["true"], "only_media": ["true"]}),
        ({"timeline": "hashtag", "hashtag": "python"}, "/api/v1/timelines/tag/python", {}),
    ],
    ids=["local-media", "hashtag"],
)
def test_a_restarted_source_refills_from_its_own_timeline(
    fake: FakeMastodon, overrides: dict[str, Any], path: str, query: dict[str, list[str]]
) -> None:
    """A source run again (as after a crash) refills from the endpoint and filters of its timeline since its last status."""
    fake.timeline = [status("20"), status("21")]
    fake.plan(Plan([update("20"), HOLD]), Plan([HOLD]))
    first = start(fake, stall_timeout=30, **overrides)
    first.until("a status", lambda: first.ctx.emitted)
    first.stop()
    again = mastodon_context()
    thread = threading.Thread(target=first.source.run, args=(again,), daemon=True)
    thread.start()
    poll_until(lambda: again.emitted, 10, "the refilled status", interval=0.02)
    again.stop.set()
    thread.join(5)
    assert [e["id"] for _, e, _ in again.emitted] == ["21"]
    assert again.reconnects == []  # refilled on its first connection
    (refill,) = [r for r in fake.requests if r.path.startswith("/api/v1/timelines/")]
    assert refill.path == path
    assert {k: v for k, v in refill.query.items() if k not in ("min_id", "limit")} == query
    assert (refill.query["min_id"], refill.query["limit"]) == (["20"], ["40"])


def test_stop_is_noticed_quickly_in_every_state(fake: FakeMastodon) -> None:
    """Stop ends the source within STOP_WITHIN_S while streaming, while backing off, and while a server never answers."""
    fake.plan(Plan([update("1"), HOLD]))
    streaming = start(fake)
    streaming.until("a status", lambda: streaming.ctx.emitted)
    streaming.stop()

    fake.plan(Plan(status=401))
    backing_off = start(fake, auth_backoff=60)
    backing_off.until("a 401", lambda: backing_off.ctx.reconnects)
    backing_off.stop()

    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen()
    accepted = threading.Event()
    threading.Thread(target=lambda: (mute.accept(), accepted.set()), daemon=True).start()
    try:
        silent = start(f"http://127.0.0.1:{mute.getsockname()[1]}", streaming_url=f"http://127.0.0.1:{mute.getsockname()[1]}")
        silent.until("the connection", accepted.is_set)
        silent.stop()
    finally:
        mute.close()


def test_config_rules_and_the_token_stays_secret() -> None:
    """Hashtag needs a tag, options fit their timeline, WebSocket URLs become HTTP, and the token is never printed."""
    with pytest.raises(ValidationError, match="needs `hashtag:`"):
        config("https://mastodon.example", timeline="hashtag")
    with pytest.raises(ValidationError, match="only used with timeline: hashtag"):
        config("https://mastodon.example", hashtag="python")
    with pytest.raises(ValidationError, match="not to hashtag"):
        config("https://mastodon.example", timeline="hashtag", hashtag="x", only_media=True)
    with pytest.raises(ValidationError, match="must not be empty"):
        config("https://mastodon.example", access_token="  ")  # noqa: S106 - a blank token
    with pytest.raises(ValidationError, match="base URL"):
        config("ftp://mastodon.example")
    made = config("mastodon.example/", streaming_url="wss://streaming.example")
    assert (made.instance, made.streaming_url) == ("https://mastodon.example", "https://streaming.example")
    assert TOKEN not in repr(made) + str(made) + made.model_dump_json()
