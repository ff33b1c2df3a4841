"""Jetstream checkpoints: time_us tokens, the saved cursor, and a restart's first subscribe URL (fake server)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.progress import ProgressWindow
from sources.base import CheckpointUnusable
from sources.jetstream import JetstreamSource
from tests.fake_jetstream import FakeJetstream, Plan, commit_event, encode, jetstream, jetstream_context, rkeys, run_until
from tests.fakes import RecordingContext
from tests.sources.test_file_checkpoint_state import JSON

SECOND_US = 1_000_000
BASE_US = 1_764_000_000 * SECOND_US
REWIND_S = 2.0


def posts(count: int) -> list[dict[str, Any]]:
    return [commit_event(BASE_US + i * SECOND_US, f"p{i}") for i in range(count)]


def saved(source: JetstreamSource, ctx: RecordingContext, acked: list[int]) -> dict[str, Any]:
    """The state the daemon would save once the inputs numbered `acked` were acknowledged (through JSON)."""
    window = ProgressWindow()
    numbers = [window.emitted(*token) for _, token in ctx.tokens]
    window.acknowledged([numbers[i] for i in acked])
    return json.loads(json.dumps(source.checkpoint_state(window.committed())))


def test_tokens_are_the_time_us_of_emits_and_of_rejects_that_have_one() -> None:
    """Records and shape-rejected events with a time_us carry (None, time_us); unparseable payloads carry none."""
    events = posts(2)
    with FakeJetstream() as server:
        server.events = [events[0]]
        bad_shape = {"did": "did:plc:bob", "time_us": BASE_US + 500_000, "kind": "commit"}  # no commit object
        server.plans.append(Plan(frames=[encode(bad_shape), b"{not json"]))
        server.publish(events[1])
        ctx = jetstream_context()
        run_until(jetstream([server.url]), ctx, lambda: len(ctx.emitted) >= 2, "two posts")
    assert ctx.tokens == [
        ("reject", (None, BASE_US + 500_000)),
        ("reject", None),
        ("emit", (None, BASE_US)),
        ("emit", (None, BASE_US + SECOND_US)),
    ]


def test_no_tokens_without_checkpoint() -> None:
    """checkpoint: false: the same records, no tokens, and checkpoints() says so."""
    with FakeJetstream(posts(2)) as server:
        ctx = jetstream_context()
        source = jetstream([server.url], checkpoint=False)
        run_until(source, ctx, lambda: len(ctx.emitted) >= 2, "two posts")
    assert not source.checkpoints() and ctx.tokens == [("emit", None)] * 2


def test_a_restart_subscribes_from_the_acknowledged_cursor_minus_the_rewind() -> None:
    """Acks 0-2 and 4 of 6: the state's cursor is post 2's time_us; the next start asks for it minus rewind, over `cursor`."""
    with FakeJetstream(posts(6)) as server:
        ctx = jetstream_context()
        source = jetstream([server.url], rewind=REWIND_S)
        run_until(source, ctx, lambda: len(ctx.emitted) >= 6, "six posts")
        state = saved(source, ctx, [0, 1, 2, 4])
        assert state == {"format": 1, "cursor": BASE_US + 2 * SECOND_US}
        again = jetstream_context()
        resumed = jetstream([server.url], rewind=REWIND_S, cursor=BASE_US + 5 * SECOND_US)
        resumed.resume(state)
        run_until(resumed, again, lambda: len(again.emitted) >= 6, "the replay from the cursor")
        query = server.queries[-1]
    assert len(server.queries) == 1 + 1
    assert query["cursor"] == [str(BASE_US + 2 * SECOND_US - round(REWIND_S * SECOND_US))]
    # From the rewound cursor on: p0-p2 were delivered (sent again within the rewind), p3-p5 come after it.
    assert rkeys(again) == ["p0", "p1", "p2", "p3", "p4", "p5"]


def test_the_saved_cursor_stays_until_this_run_passes_it() -> None:
    """Before any ack, and after acks of replayed events older than it, the state keeps the restored cursor."""
    with FakeJetstream(posts(4)) as server:
        source = jetstream([server.url], rewind=REWIND_S)
        source.resume({"format": 1, "cursor": BASE_US + 3 * SECOND_US})
        assert source.checkpoint_state({}) == {"format": 1, "cursor": BASE_US + 3 * SECOND_US}
        ctx = jetstream_context()
        run_until(source, ctx, lambda: len(ctx.emitted) >= 3, "the rewound replay")
    assert rkeys(ctx)[:3] == ["p1", "p2", "p3"]
    assert saved(source, ctx, [0])["cursor"] == BASE_US + 3 * SECOND_US
    assert saved(source, ctx, [0, 1, 2])["cursor"] == BASE_US + 3 * SECOND_US


def test_a_fresh_source_saves_no_cursor() -> None:
    """Nothing restored, nothing acknowledged: cursor null, which resume takes as "start as configured"."""
    source = jetstream(["ws://127.0.0.1:9/subscribe"], cursor=BASE_US)
    state = source.checkpoint_state({})
    assert state == {"format": 1, "cursor": None}
    source.resume(state)
    assert "cursor=" + str(BASE_US) in source.subscribe_url()


@pytest.mark.parametrize(
    "state",
    [{}, {"format": 2, "cursor": 1}, {"format": True, "cursor": 1}, {"format": 1, "cursor": "1"}, {"format": 1, "cursor": -5}],
    ids=["empty", "other_format", "format_true", "cursor_text", "cursor_negative"],
)
def test_states_that_do_not_fit_raise_checkpoint_unusable(state: dict[str, Any]) -> None:
    """Another format or a cursor that is not a non-negative integer: CheckpointUnusable."""
    with pytest.raises(CheckpointUnusable):
        jetstream(["ws://127.0.0.1:9/subscribe"]).resume(state)


@settings(max_examples=200, deadline=None)
@given(st.one_of(JSON, st.fixed_dictionaries({"format": st.just(1) | JSON, "cursor": st.integers() | JSON})))
def test_any_state_is_taken_or_refused_with_checkpoint_unusable(state: Any) -> None:
    """Any JSON value as state: resume takes it (and the subscribe URL is built) or raises CheckpointUnusable."""
    source = jetstream(["ws://127.0.0.1:9/subscribe"])
    try:
        source.resume(state)
    except CheckpointUnusable:
        return
    assert source.subscribe_url().startswith("ws://127.0.0.1:9/subscribe?")
