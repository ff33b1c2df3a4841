"""Source payloads to items: X v2, X v1.1, Jetstream, Mastodon and generic JSON, in every script."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from processor.errors import PermanentFailure
from processor.handler import handler
from processor.mappings import GenericPaths, Post, map_event
from tests.processor.conftest import FakeContext, MotoStack, kinesis_event, kinesis_record, x_v2

# Scripts and emoji that broke the original sample; "é" is e + combining acute (must not be normalised).
TEXTS = {
    "arabic": "مرحبا بالعالم! هذا اختبار 🌍",
    "cjk": "你好，世界 こんにちは 안녕하세요 🍜",
    "devanagari": "नमस्ते दुनिया, यह परीक्षण है 🙏🏽",
    "cyrillic": "Привет, мир! Проверка связи 👋",
    "emoji": "👩🏽‍💻🇺🇦❤️‍🔥 cafe\u0301 \U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1",
}
DEFAULT_PATHS = GenericPaths()


def x_v1(text: str) -> dict[str, Any]:
    return {
        "id_str": "1050118621198921728",
        "text": text,
        "created_at": "Wed Oct 10 20:19:24 +0000 2018",
        "lang": "und",
        "user": {"id_str": "6253282", "screen_name": "TwitterAPI", "name": "Twitter API"},
        "entities": {"hashtags": [{"text": "тест", "indices": [0, 5]}]},
    }


def jetstream(text: str) -> dict[str, Any]:
    return {
        "did": "did:plc:eygmaihciaxprqvxpfvl6flk",
        "time_us": 1725911162329308,
        "kind": "commit",
        "commit": {
            "rev": "3l3qo2vuowo2b",
            "operation": "create",
            "collection": "app.bsky.feed.post",
            "rkey": "3l3qo2vutsw2b",
            "record": {
                "$type": "app.bsky.feed.post",
                "createdAt": "2024-09-09T19:46:02.102Z",
                "langs": ["ar", "en"],
                "text": text,
                "facets": [{"features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "日本"}], "index": {}}],
            },
            "cid": "bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi",
        },
    }


def mastodon(text: str) -> dict[str, Any]:
    return {
        "id": "113104394839457181",
        "created_at": "2024-09-09T19:46:02.000Z",
        "language": "hi",
        "content": f'<p>{text.replace("&", "&amp;")}</p><p>second &amp; <a href="https://x">link</a><br>line</p>',
        "spoiler_text": "",
        "account": {"id": "109", "username": "alice", "acct": "alice@example.social"},
        "tags": [{"name": "हिंदी", "url": "https://x/tags/x"}],
        "reblog": None,
    }


def generic(text: str) -> dict[str, Any]:
    return {"username": "sensor-7", "id": 123456, "text": text, "timestamp": 1_700_000_000, "hashtags": ["#один", "two"]}


BUILDERS = {
    "x-v2": lambda text: x_v2("1861000000000003718", text, username="أحمد_1"),
    "x-v1.1": x_v1,
    "jetstream": jetstream,
    "mastodon": mastodon,
    "generic": generic,
}


def expected_message(source: str, text: str) -> str:
    return f"{text}\n\nsecond & link\nline" if source == "mastodon" else text


@pytest.mark.parametrize("script", TEXTS)
@pytest.mark.parametrize("source", BUILDERS)
def test_every_mapping_keeps_text_of_every_script_exactly(source: str, script: str) -> None:
    """Text in Arabic, CJK, Devanagari, Cyrillic and emoji survives mapping code point for code point."""
    text = TEXTS[script]
    post = map_event(BUILDERS[source](text), DEFAULT_PATHS)
    assert post.source == source
    assert post.message == expected_message(source, text)
    assert post.message.encode("utf-8") == expected_message(source, text).encode("utf-8")


def test_x_v2_fields() -> None:
    """X v2: the handle from includes.users, author id, language, hashtags, created_at in UTC."""
    payload = x_v2("1861000000000003718", "hi #Été", username="yara_14120", author_id="1001116579")
    payload["data"]["entities"] = {"hashtags": [{"start": 3, "end": 7, "tag": "Été"}, {"start": 3, "end": 7, "tag": "Été"}]}
    assert map_event(payload, DEFAULT_PATHS) == Post(
        source="x-v2",
        username="yara_14120",
        id="1861000000000003718",
        message="hi #Été",
        timestamp=datetime(2026, 1, 1, 11, 59, 58, tzinfo=UTC),
        author_id="1001116579",
        lang="en",
        hashtags=("Été",),
    )


def test_x_v2_without_includes_or_created_at_uses_author_id_and_the_snowflake_time() -> None:
    """Missing optional fields: Username falls back to author_id, the time comes from the tweet id."""
    # X's documentation shows this status as created "Wed Oct 10 20:19:24 +0000 2018".
    payload = {"data": {"id": "1050118621198921728", "text": "bare", "author_id": "42"}}
    post = map_event(payload, DEFAULT_PATHS)
    assert (post.username, post.lang, post.hashtags) == ("42", None, ())
    assert post.timestamp is not None
    assert post.timestamp.replace(microsecond=0) == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)


def test_x_v2_id_that_is_no_snowflake_leaves_the_time_to_the_arrival() -> None:
    """Digits too large to be a real tweet id give no time (the item then uses the arrival time)."""
    assert map_event({"data": {"id": "9" * 40, "text": "t", "author_id": "1"}}, DEFAULT_PATHS).timestamp is None


def test_x_v2_long_post_uses_note_tweet_text() -> None:
    """A long post's full text (note_tweet) wins over its truncated data.text."""
    payload = x_v2("1", "truncated…", note_tweet={"text": "the whole long text ✍️"})
    assert map_event(payload, DEFAULT_PATHS).message == "the whole long text ✍️"


def test_x_v1_fields() -> None:
    """X v1.1: screen_name, id_str, Twitter's created_at format, user id, hashtags."""
    post = map_event(x_v1("text"), DEFAULT_PATHS)
    assert (post.username, post.id, post.author_id, post.hashtags) == ("TwitterAPI", "1050118621198921728", "6253282", ("тест",))
    assert post.timestamp == datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)


def test_x_v1_extended_tweet_full_text_wins() -> None:
    """A v1.1 status with an extended_tweet is stored with its full text."""
    payload = x_v1("short…") | {"extended_tweet": {"full_text": "the full text 📜"}}
    assert map_event(payload, DEFAULT_PATHS).message == "the full text 📜"


def test_jetstream_fields() -> None:
    """Jetstream: the DID as Username, the record key as Id, createdAt, first language, tag facets."""
    post = map_event(jetstream("x"), DEFAULT_PATHS)
    assert (post.username, post.id, post.lang, post.hashtags) == (
        "did:plc:eygmaihciaxprqvxpfvl6flk",
        "3l3qo2vutsw2b",
        "ar",
        ("日本",),
    )
    assert post.timestamp == datetime(2024, 9, 9, 19, 46, 2, 102000, tzinfo=UTC)


def test_jetstream_without_langs_or_created_at_uses_time_us() -> None:
    """Missing optional fields in a post record: no language, the event's time_us as the time."""
    payload = jetstream("x")
    del payload["commit"]["record"]["langs"], payload["commit"]["record"]["createdAt"], payload["commit"]["record"]["facets"]
    post = map_event(payload, DEFAULT_PATHS)
    assert (post.lang, post.hashtags) == (None, ())
    assert post.timestamp == datetime(2024, 9, 9, 19, 46, 2, 329308, tzinfo=UTC)


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e.update(kind="identity"),
        lambda e: e["commit"].update(operation="delete"),
        lambda e: e["commit"].update(collection="app.bsky.feed.like"),
    ],
)
def test_jetstream_events_that_are_not_new_posts_are_unmappable(change: Any) -> None:
    """Identity events, deletes and other collections are refused with a reason, not silently skipped."""
    payload = jetstream("x")
    change(payload)
    with pytest.raises(PermanentFailure) as caught:
        map_event(payload, DEFAULT_PATHS)
    assert caught.value.reason == "unmappable"
    assert "jetstream" in caught.value.detail


def test_mastodon_fields_and_html() -> None:
    """Mastodon: acct as Username, HTML entities decoded, paragraphs and line breaks kept as newlines."""
    post = map_event(mastodon("a < b"), DEFAULT_PATHS)
    assert (post.username, post.id, post.author_id, post.lang, post.hashtags) == (
        "alice@example.social",
        "113104394839457181",
        "109",
        "hi",
        ("हिंदी",),
    )
    assert post.message == "a < b\n\nsecond & link\nline"


def test_mastodon_boost_and_content_warning() -> None:
    """A boost carries the boosted status's text; a content warning precedes the text."""
    payload = mastodon("ignored") | {"content": "", "reblog": {"content": "<p>boosted ✨</p>", "spoiler_text": "CW", "tags": []}}
    assert map_event(payload, DEFAULT_PATHS).message == "CW\n\nboosted ✨"


def test_generic_default_paths() -> None:
    """Generic JSON: numbers as string ids, epoch seconds, hashtags without '#'."""
    post = map_event(generic("hello"), DEFAULT_PATHS)
    assert (post.username, post.id, post.hashtags) == ("sensor-7", "123456", ("один", "two"))
    assert post.timestamp == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def test_generic_paths_come_from_the_environment() -> None:
    """GENERIC_*_PATH variables point the generic mapping at nested keys and list elements."""
    paths = GenericPaths.from_environ(
        {"GENERIC_USERNAME_PATH": "who.handle", "GENERIC_ID_PATH": "meta.0.uid", "GENERIC_MESSAGE_PATH": "body"}
    )
    post = map_event({"who": {"handle": "ꯃꯤꯇꯩ"}, "meta": [{"uid": "u-1"}], "body": "ok"}, paths)
    assert (post.username, post.id, post.message, post.timestamp) == ("ꯃꯤꯇꯩ", "u-1", "ok", None)


def test_generic_invalid_path_setting_is_a_configuration_error() -> None:
    """An empty path segment is refused naming the variable."""
    with pytest.raises(Exception, match="GENERIC_ID_PATH"):
        GenericPaths.from_environ({"GENERIC_ID_PATH": "a..b"})


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"data": {"id": "1", "text": "no author"}}, "neither an author_id"),
        ({"data": {"text": "no id", "author_id": "1"}}, "data.id"),
        ({"id_str": "1", "user": {}, "text": "x"}, "user.screen_name"),
        ({"username": "u", "text": "no id"}, "GENERIC_ID_PATH"),
        ({"errors": [{"title": "operational-disconnect"}]}, "in-band error"),
        ({"username": "u", "id": "1", "text": "t", "timestamp": "yesterday"}, "unreadable timestamp"),
    ],
)
def test_unmappable_payloads_say_what_is_missing(payload: dict[str, Any], fragment: str) -> None:
    """Payloads without the required fields are permanent failures whose detail names the field."""
    with pytest.raises(PermanentFailure) as caught:
        map_event(payload, DEFAULT_PATHS)
    assert caught.value.reason == "unmappable"
    assert fragment in caught.value.detail


@pytest.mark.slow
def test_every_source_and_script_is_stored_byte_for_byte(moto_stack: MotoStack, context: FakeContext) -> None:
    """Through the handler into moto's table: every script and emoji, in every mapping, read back unchanged."""
    expected: dict[str, str] = {}
    records = []
    for source, build in BUILDERS.items():
        for script, text in TEXTS.items():
            payload = build(text)
            unique_id = f"{source}-{script}"
            if source == "x-v2":
                payload["data"]["id"] = unique_id
            elif source == "x-v1.1":
                payload["id_str"] = unique_id
            elif source == "jetstream":
                payload["commit"]["rkey"] = unique_id
            else:
                payload["id"] = unique_id
            expected[unique_id] = expected_message(source, text)
            records.append(kinesis_record(payload))
    assert handler(kinesis_event(*records), context) == {"batchItemFailures": []}
    items = moto_stack.items()
    assert {i["Id"]: i["Message"].encode("utf-8") for i in items} == {k: v.encode("utf-8") for k, v in expected.items()}
    assert {i["Source"] for i in items} == set(BUILDERS)
    assert all(i["Timestamp"].endswith("Z") for i in items)


def unmappable_detail(event: Any) -> str:
    with pytest.raises(PermanentFailure) as caught:
        map_event(event, DEFAULT_PATHS)
    assert caught.value.reason == "unmappable"
    return caught.value.detail


def nested(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def test_x_v2_id_of_thousands_of_digits_gives_no_snowflake_time() -> None:
    """A 5,000-digit id made int() raise ValueError while reading its snowflake time; now it has none."""
    post = map_event({"data": {"id": "7" * 5000, "text": "t", "author_id": "1"}}, DEFAULT_PATHS)
    assert post.timestamp is None and post.id == "7" * 5000


def test_an_id_too_long_to_be_text_counts_as_not_text() -> None:
    """An integer id over Python's 4,300-digit str() limit raised ValueError; now the id is refused by name."""
    detail = unmappable_detail({"data": {"id": 10**5000, "text": "t", "author_id": "1"}})
    assert "not text or an integer" in detail and "data.id" in detail


def test_jetstream_time_us_too_large_for_a_float_is_an_unreadable_time() -> None:
    """time_us of 400 digits overflowed the float division (OverflowError); now it is an unreadable timestamp."""
    event = jetstream("t")
    del event["commit"]["record"]["createdAt"]
    event["time_us"] = 10**400
    assert "unreadable timestamp" in unmappable_detail(event)


def test_details_quote_deeply_nested_values_briefly() -> None:
    """repr of a field nested 5,000 deep raised RecursionError inside a failure detail; now it is abridged."""
    assert len(unmappable_detail({"errors": nested(5000)})) < 200
    event = jetstream("t") | {"kind": nested(5000)}
    assert "is not a post" in unmappable_detail(event)
    assert "unreadable timestamp" in unmappable_detail(x_v2("1", "t", created_at={"a": nested(5000)}))
