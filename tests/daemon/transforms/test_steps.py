"""Each step on X v2 tweets: filter, fields, redact (hash and remove), add (constants, source, time, envelope)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from typing import Any

import jmespath
import pytest

from daemon.transforms.paths import StepFailed, parse_path, projection_tree
from daemon.transforms.steps import (
    DROP,
    add_step,
    envelope_step,
    fields_step,
    filter_step,
    key_text,
    redact_step,
    truthy,
)
from tests.daemon.transforms.tweets import tweet

KEY = b"k" * 32
RFC3339_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.mark.parametrize(
    ("expression", "kept"),
    [
        ("data.lang == 'ja'", True),
        ("data.lang == 'en'", False),
        ("data.public_metrics.like_count > `10`", True),
        ("data.public_metrics.like_count > `100`", False),
        ("contains(matching_rules[].tag, 'releases')", True),
        ("matching_rules[?tag == 'other']", False),  # an empty list is false
        ("data.no_such_field", False),  # null is false
        ("data.public_metrics.quote_count", True),  # 0 is true in JMESPath
    ],
)
def test_filter_keeps_exactly_what_is_true(expression: str, kept: bool) -> None:
    """A filter returns the record itself when its expression is true in JMESPath's sense, else DROP."""
    event = tweet()
    result = filter_step(jmespath.compile(expression).search)(event)
    assert (result is event) if kept else (result is DROP)


def test_truthiness_follows_jmespath() -> None:
    """false, null and empty strings/lists/objects are false; numbers (0 too) and non-empty values are true."""
    false: list[Any] = [False, None, "", [], {}]
    true: list[Any] = [True, 0, 0.0, "x", [0], {"a": None}]
    assert [truthy(v) for v in false] == [False] * 5
    assert [truthy(v) for v in true] == [True] * 6


def test_fields_projects_and_keeps_non_latin_text() -> None:
    """`fields` keeps the listed paths with the text exactly as it was, and leaves the source's object alone."""
    event = tweet()
    before = copy.deepcopy(event)
    step = fields_step(projection_tree([parse_path(p) for p in ("data.text", "data.author_id", "includes.users")]))
    out = step(event)
    assert out == {
        "data": {"text": "東京で新しいリリース 🎉 مرحبا", "author_id": event["data"]["author_id"]},
        "includes": event["includes"],
    }
    assert event == before


def test_redact_hashes_with_hmac_sha256_and_removes() -> None:
    """Hashed paths hold HMAC-SHA256 hex of the UTF-8 value (inside lists too); removed paths are gone."""
    event = tweet()
    step = redact_step([parse_path("data.author_id"), parse_path("includes.users[].name")], [parse_path("data.geo")], KEY)
    out = step(event)
    assert out["data"]["author_id"] == hmac.new(KEY, event["data"]["author_id"].encode(), hashlib.sha256).hexdigest()
    assert out["includes"]["users"][0]["name"] == hmac.new(KEY, "أحمد".encode(), hashlib.sha256).hexdigest()
    assert "geo" not in out["data"] and out["data"]["text"] == event["data"]["text"]
    assert event["data"]["geo"] and event["includes"]["users"][0]["name"] == "أحمد", "the input was changed"


def test_redact_of_absent_fields_changes_nothing() -> None:
    """Paths a record lacks leave it as it is: the same object comes back."""
    event = tweet()
    del event["data"]["geo"]
    assert redact_step([parse_path("data.withheld.copyright")], [parse_path("data.geo")], KEY)(event) is event


def test_redact_of_a_non_string_fails_naming_the_field() -> None:
    """Hashing a number is a StepFailed naming the path: the record is dead-lettered, never sent half-redacted."""
    with pytest.raises(StepFailed, match=r"data\.public_metrics\.like_count is a number"):
        redact_step([parse_path("data.public_metrics.like_count")], [], KEY)(tweet())


def test_add_sets_constants_source_and_receive_time() -> None:
    """`add` sets constants (creating objects on the way), the source's name and an RFC 3339 UTC receive time."""
    event = tweet()
    step = add_step(
        [(parse_path("producer.pipeline"), "x-ja"), (parse_path("data.reviewed"), False)],
        parse_path("producer.source"),
        parse_path("producer.received_at"),
        "x-filtered",
    )
    out = step(event)
    assert out["producer"]["pipeline"] == "x-ja" and out["producer"]["source"] == "x-filtered"
    assert RFC3339_UTC_MS.match(out["producer"]["received_at"])
    assert out["data"]["reviewed"] is False and "producer" not in event


def test_add_of_values_already_there_returns_the_same_object() -> None:
    """An `add` that sets nothing new (the values are there already) hands back the very object."""
    event = tweet()
    assert add_step([(parse_path("data.lang"), "ja")], None, None, "s")(event) is event
    assert add_step([], None, None, "s")(event) is event


def test_add_through_a_string_fails() -> None:
    """Setting data.text.x, where data.text is a string, is a StepFailed naming data.text."""
    with pytest.raises(StepFailed, match=r"data\.text is a string"):
        add_step([(parse_path("data.text.x"), 1)], None, None, "s")(tweet())


def test_envelope_wraps_the_record() -> None:
    """`envelope` gives {source, received_at, payload} with the record untouched as payload."""
    event = tweet()
    out = envelope_step("x")(event)
    assert list(out) == ["source", "received_at", "payload"] and out["payload"] is event and out["source"] == "x"
    assert RFC3339_UTC_MS.match(out["received_at"])


def test_key_text_takes_strings_and_integers_only() -> None:
    """A partition key expression's result counts when it is a non-empty string or an integer (bools are not)."""
    assert [key_text(v) for v in ("a", 12, "", None, True, 1.5, ["a"])] == ["a", "12", None, None, None, None, None]
