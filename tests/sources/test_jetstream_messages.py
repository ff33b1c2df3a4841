"""What the jetstream source makes of each message: records, dead letters with reasons, notices; never a crash."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.mappings import GenericPaths, map_event
from sources.jetstream import MAX_SEEN_EVENTS, JetstreamSource, JetstreamSourceConfig, _Seen
from tests.fake_jetstream import FakeJetstream, Plan, commit_event, encode, jetstream, jetstream_context, rkeys, run_until
from tests.fakes import RecordingContext

BASE_US = 1_764_000_000_000_000


def good(n: int) -> dict[str, Any]:
    return commit_event(BASE_US + n, f"g{n}", text=f"good {n}")


def test_bad_messages_are_dead_lettered_with_reasons_and_the_stream_goes_on() -> None:
    """Garbage, bad UTF-8, oversize, non-objects and malformed events are dead-lettered; good posts still flow."""
    oversize = encode(commit_event(BASE_US + 50, "big", text="x" * 3000))
    bad: list[tuple[bytes | str, str]] = [
        ("not json at all", "invalid_json"),
        (b'{"did": "caf\xe9 \xff"}', "invalid_utf8"),
        (oversize, "line_too_long"),
        ("[1, 2, 3]", "unexpected_shape"),
        ('{"time_us": 5, "kind": "commit"}', "unexpected_shape"),
        ('{"did": "did:plc:x", "time_us": "soon", "kind": "commit"}', "unexpected_shape"),
        ('{"did": "did:plc:x", "time_us": 7, "kind": "commit"}', "unexpected_shape"),
        ('{"did": "did:plc:x", "time_us": 8, "kind": "commit", "commit": {"operation": "create"}}', "unexpected_shape"),
        (encode(commit_event(9, "norecord", record=None)), "unexpected_shape"),
        ("", "empty_line"),
    ]
    with FakeJetstream([good(1), good(2)]) as server:
        server.plans.append(Plan(frames=[frame for frame, _ in bad]))
        ctx = jetstream_context()
        run_until(jetstream([server.url], max_message_size_bytes=2048), ctx, lambda: len(ctx.emitted) >= 2, "two posts")
        assert server.connections == 1, "bad messages never cost the connection"
    assert [reason for _, _, reason, _ in ctx.rejected] == [reason for _, reason in bad]
    assert [data for data, _, _, _ in ctx.rejected] == [f if isinstance(f, bytes) else f.encode() for f, _ in bad]
    origins = [origin for _, origin, _, _ in ctx.rejected]
    assert origins[0] == f"jetstream:{server.host}:after:start"
    assert origins[6] == f"jetstream:{server.host}:7"  # the time_us is known: it names the event
    assert rkeys(ctx) == ["g1", "g2"]
    assert not ctx.reconnects


def test_a_message_beyond_the_websocket_limit_is_counted_and_the_source_reconnects() -> None:
    """A frame over the client's max_size (2x the limit) fails the connection: dead-lettered as message_too_large."""
    huge = encode(commit_event(BASE_US + 3, "huge", text="y" * 5000))
    with FakeJetstream([good(1), good(2)]) as server:
        server.plans.append(Plan(frames=[huge]))
        ctx = jetstream_context()
        run_until(jetstream([server.url], max_message_size_bytes=2048), ctx, lambda: len(ctx.emitted) >= 2, "two posts")
    assert [(data, reason) for data, _, reason, _ in ctx.rejected] == [(b"", "message_too_large")]
    assert "4096 bytes" in ctx.rejected[0][3]
    assert [r[0] for r in ctx.reconnects] == ["message_too_large"]
    assert rkeys(ctx) == ["g1", "g2"]


def test_identity_account_deletes_and_unknown_kinds_are_notices_not_records() -> None:
    """Non-post events are counted by kind (not emitted, not dead-lettered) and still move the cursor."""
    events = [
        good(1),
        {"did": "did:plc:a", "time_us": BASE_US + 2, "kind": "identity", "identity": {"handle": "a.bsky.social"}},
        {"did": "did:plc:a", "time_us": BASE_US + 3, "kind": "account", "account": {"active": False}},
        commit_event(BASE_US + 4, "g1", operation="delete", record=None),
        {"did": "did:plc:a", "time_us": BASE_US + 5, "kind": "sync"},
        commit_event(BASE_US + 6, "g6", operation="resurrect"),
        good(7),
    ]
    with FakeJetstream(events) as server:
        ctx = jetstream_context()
        source = jetstream([server.url])
        run_until(source, ctx, lambda: len(ctx.emitted) >= 2, "two posts")
    kinds = [kind for kind, _ in ctx.protocol_messages]
    assert kinds == ["identity", "account", "commit_delete", "unknown_kind", "unknown_operation"]
    assert rkeys(ctx) == ["g1", "g7"] and not ctx.rejected
    assert source.position() == BASE_US + 7


def test_emitted_posts_map_to_table_items() -> None:
    """Each emitted record is a shape the processor maps: Username = DID, Id = rkey, Message = text."""
    events = [commit_event(BASE_US + i, f"r{i}", text=f"héllo {i} 🦋", did=f"did:plc:u{i}") for i in range(3)]
    with FakeJetstream(events) as server:
        ctx = jetstream_context()
        run_until(jetstream([server.url]), ctx, lambda: len(ctx.emitted) >= 3, "three posts")
    for data, _, _ in ctx.emitted:
        post = map_event(json.loads(data), GenericPaths())
        assert (post.source, post.username, post.id) == ("jetstream", post.author_id, json.loads(data)["commit"]["rkey"])
    assert map_event(json.loads(ctx.emitted[2][0]), GenericPaths()).message == "héllo 2 🦋"


def test_replayed_notices_are_not_counted_twice() -> None:
    """After a reconnect the rewound identity event is recognised as seen: one notice, not two."""
    events = [{"did": "did:plc:a", "time_us": BASE_US + 1, "kind": "identity"}, good(2), good(3)]
    with FakeJetstream(events) as server:
        server.plans.append(Plan(send=2, then="close", close_code=1001))
        ctx = jetstream_context()
        run_until(jetstream([server.url], rewind=1), ctx, lambda: len(ctx.emitted) >= 2, "two posts")
        assert server.queries[1]["cursor"] == [str(BASE_US + 2 - 1_000_000)]
    # Counted once as identity; its replay and g2's are counted as duplicates, not handed over again.
    assert [kind for kind, _ in ctx.protocol_messages] == ["identity", "duplicate", "duplicate"]
    assert ctx.protocol_messages[1][1] == f"jetstream:{server.host}:{BASE_US + 1}"
    assert rkeys(ctx) == ["g2", "g3"]


def test_seen_set_is_bounded_by_window_and_count() -> None:
    """De-duplication memory drops keys older than its window and never holds more than its limit."""
    seen = _Seen(window_us=100, limit=5)
    assert seen.add(0, ("a",)) and not seen.add(0, ("a",))
    seen.add(150, ("b",))
    assert seen.add(0, ("a",)), "a key older than the window was forgotten"
    for i in range(20):
        seen.add(200 + i, (i,))
    assert len(seen) == 5
    assert MAX_SEEN_EVENTS >= 100_000


_SMALL = JetstreamSourceConfig(max_message_size_bytes=4096)


def _handled(source: JetstreamSource, ctx: RecordingContext) -> int:
    return len(ctx.emitted) + len(ctx.rejected) + len(ctx.protocol_messages)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_any_frame_is_a_record_a_rejection_or_a_notice(frame: bytes | str) -> None:
    """Arbitrary frame contents never raise: each ends as exactly one emit, reject or notice."""
    source = JetstreamSource(_SMALL)
    ctx = jetstream_context()
    assert source._handle(frame, "h:1", ctx)
    assert _handled(source, ctx) == 1


_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=8)
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
)
_events = st.fixed_dictionaries(
    {},
    optional={
        "did": st.sampled_from(["did:plc:a", "", 5]) | _json,
        "time_us": st.integers(min_value=-5, max_value=2**64) | _json,
        "kind": st.sampled_from(["commit", "identity", "account", "x"]) | _json,
        "commit": st.fixed_dictionaries(
            {},
            optional={
                "operation": st.sampled_from(["create", "update", "delete"]) | _json,
                "collection": st.just("app.bsky.feed.post") | _json,
                "rkey": st.text(max_size=5) | _json,
                "record": st.fixed_dictionaries({}, optional={"text": _json, "createdAt": _json}) | _json,
            },
        )
        | _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(_events)
def test_any_event_shape_is_handled_once_and_emitted_events_are_commits(event: dict[str, Any]) -> None:
    """Any Jetstream-like object ends in exactly one outcome; emitted ones are create/update commits with a record."""
    source = JetstreamSource(_SMALL)
    ctx = jetstream_context()
    source._handle(json.dumps(event), "h:1", ctx)
    assert _handled(source, ctx) == 1
    for _, emitted, _ in ctx.emitted:
        assert emitted["kind"] == "commit" and emitted["commit"]["operation"] in ("create", "update")
        assert isinstance(emitted["commit"]["record"], dict)
