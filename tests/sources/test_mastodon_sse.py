"""The SSE parser and the source's handling of arbitrary server bytes: properties (Hypothesis) and edge cases."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from sources.mastodon import MastodonSource
from sources.mastodon_api import RETRY_AFTER_MAX_S, retry_after_s, safe_error
from sources.mastodon_sse import SseComment, SseEvent, SseParser
from tests.fake_mastodon import config, mastodon_context

MAX = 200
names = st.sampled_from(["update", "delete", "status.update", "notification", ""])
data_lines = st.lists(st.binary(max_size=150).filter(lambda b: b"\n" not in b and b"\r" not in b), min_size=1, max_size=4)
stream_items = st.lists(st.one_of(st.tuples(names, data_lines), st.just("heartbeat")), max_size=12)


def encode(items: list[object]) -> bytes:
    out = b""
    for item in items:
        if item == "heartbeat":
            out += b":thump\n"
        else:
            name, lines = item  # type: ignore[misc]
            out += (
                (b"event: " + name.encode() + b"\n" if name else b"")
                + b"".join(b"data: " + line + b"\n" for line in lines)
                + b"\n"
            )
    return out


def expected_item(item: object) -> SseComment | SseEvent:
    """What the parser must make of one encoded item: data lines kept while they fit, oversize flagged."""
    if item == "heartbeat":
        return SseComment(b"thump")
    name, lines = item  # type: ignore[misc]
    kept: list[bytes] = []
    for line in lines:
        if len(b"\n".join([*kept, line])) > MAX:
            return SseEvent(name or "message", b"\n".join(kept), oversize=True)
        kept.append(line)
    return SseEvent(name or "message", b"\n".join(kept))


def feed_in_pieces(parser: SseParser, data: bytes, cuts: list[int]) -> list[object]:
    items: list[object] = []
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        items += parser.feed(data[start:cut])
        start = max(start, cut)
    return items


@settings(max_examples=200, deadline=None)
@given(stream_items, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8), st.booleans())
def test_any_chunking_yields_the_same_events(items: list[object], cuts: list[int], crlf: bool) -> None:
    """However the bytes are cut into reads (and whether lines end in LF or CRLF), the same events come out."""
    data = encode(items)
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    whole = SseParser(MAX).feed(data)
    assert feed_in_pieces(SseParser(MAX), data, cuts) == whole
    assert whole == [expected_item(item) for item in items]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000), max_size=6))
def test_arbitrary_bytes_never_raise_and_stay_bounded(data: bytes, cuts: list[int]) -> None:
    """Any bytes: no exception, no event data over max_event_bytes, and the parser's buffer stays bounded."""
    parser = SseParser(MAX)
    for item in feed_in_pieces(parser, data, cuts):
        if isinstance(item, SseEvent):
            assert len(item.data) <= MAX
    assert len(parser._buffer) <= MAX + 16 + 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names, st.binary(max_size=300)), max_size=8))
def test_any_event_ends_as_a_record_a_rejection_or_a_count(events: list[tuple[str, bytes]]) -> None:
    """Whatever the server sends as events, each one is emitted, rejected with a reason, or counted; nothing raises."""
    source = MastodonSource(config("http://127.0.0.1:9", max_event_bytes=MAX))
    ctx = mastodon_context()
    parser_input = b"".join(
        (b"event: " + name.encode() + b"\n" if name else b"")
        + b"data: "
        + payload.replace(b"\n", b" ").replace(b"\r", b" ")
        + b"\n\n"
        for name, payload in events
    )
    assert source._chunk(ctx, SseParser(MAX), parser_input)
    accounted = len(ctx.emitted) + len(ctx.rejected) + len(ctx.protocol_messages)
    assert accounted == len(events)
    assert all(reason for _, _, reason, _ in ctx.rejected)


def test_an_overlong_line_is_cut_off_and_flagged_and_the_next_event_is_clean() -> None:
    """A data line far over the limit, arriving in pieces, ends as one oversize event; the following event is intact."""
    parser = SseParser(MAX)
    items = parser.feed(b"event: update\ndata: " + b"x" * 150)
    items += parser.feed(b"y" * 150)
    items += parser.feed(b"z" * 150 + b"\n\nevent: update\ndata: {}\n\n")
    assert [(i.name, i.oversize, i.data) for i in items if isinstance(i, SseEvent)] == [
        ("update", True, b""),
        ("update", False, b"{}"),
    ]


def test_an_oversize_event_keeps_only_the_lines_before_the_overflow() -> None:
    """Once an event's data overflows, later (even short) data lines are not added: the kept data is a true prefix."""
    parser = SseParser(MAX)
    (event,) = parser.feed(b"data: " + b"a" * 150 + b"\ndata: " + b"b" * 80 + b"\ndata: c\n\n")
    assert event == SseEvent("message", b"a" * 150, oversize=True)


def test_retry_after_reads_seconds_and_dates_within_bounds() -> None:
    """Retry-After as seconds or an HTTP date; garbage is ignored; values are clamped to [0, 1 h]."""
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("30") == 30.0
    assert retry_after_s("Tue, 01 Dec 2026 12:00:45 GMT", now=lambda: now) == 45.0
    assert retry_after_s("Tue, 01 Dec 2026 11:00:00 GMT", now=lambda: now) == 0.0
    assert retry_after_s("999999") == RETRY_AFTER_MAX_S
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None
    assert retry_after_s("nan") is None


def test_error_texts_mask_the_token_and_stay_short() -> None:
    """Error bodies are shortened, JSON errors unwrapped, and the token replaced wherever it appears."""
    assert safe_error(b'{"error": "token abc123 is revoked"}', "abc123") == "token <token> is revoked"
    assert len(safe_error(b"x" * 5000, "tok-1234567")) <= 200
    assert safe_error(b"\xff\xfe bad bytes", "tok-1234567").endswith("bad bytes")
