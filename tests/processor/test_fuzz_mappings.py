"""Properties of the mappings: payloads shaped like each source's events, with fields of random types.

Each payload goes the whole per-record path (JSON bytes in a Kinesis record, then user_records, parse_json,
map_event, build_item); values JSON cannot carry (NaN, infinity, lone surrogates, 5,000-digit integers,
deep nesting) go straight to map_event and build_item. Only an item or a PermanentFailure may come out.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.errors import PermanentFailure
from processor.items import build_item
from processor.mappings import GenericPaths, map_event
from tests.processor.conftest import kinesis_record, x_v2
from tests.processor.test_fuzz_decoding import ARRIVED, check, outcomes
from tests.processor.test_mappings import generic, jetstream, mastodon, x_v1

HUGE_INT = 10**5000 - 1  # 5,000 nines: over Python's int <-> str digit limit
# Built by a function: Hypothesis would repr a sampled huge integer, and repr refuses it.
ODD_SCALARS = st.builds(lambda sign: sign * HUGE_INT, st.sampled_from([1, -1])) | st.sampled_from(
    [
        10**300,
        2**64,
        -1,
        0,
        True,
        1e308,
        -0.0,
        float("inf"),
        float("nan"),
        "",
        " ",
        "\x00",
        "\ud800",
        "9" * 5000,
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "Wed Oct 10 20:19:24 +0000 2018",
        "Wed Oct 10 20:19:24 -2359 0001",
        "<p>&#99999999999; &#0; <!-- <![CDATA[ </p",
        "<" * 50,
        "2024-09-09T19:46:02.1234567890123Z",
    ]
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), ODD_SCALARS)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


TEMPLATES = {
    "x-v2": x_v2("1861000000000003718", "text #tag", entities={"hashtags": [{"tag": "tag"}]}, note_tweet={"text": "long"}),
    "x-v1.1": x_v1("text") | {"extended_tweet": {"full_text": "full", "entities": {"hashtags": [{"text": "h"}]}}},
    "jetstream": jetstream("text")
    | {"commit": jetstream("text")["commit"] | {"record": jetstream("text")["commit"]["record"] | {"tags": ["t"]}}},
    "mastodon": mastodon("text") | {"reblog": mastodon("boosted")},
    "generic": generic("text") | {"lang": "en", "author_id": "a1"},
    "x-error": {"errors": [{"title": "operational-disconnect", "detail": "bye"}]},
}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a template, containers included (so whole sub-objects get replaced too)."""
    found = [prefix] if prefix else []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in children:
        found.extend(paths(child, (*prefix, key)))
    return found


PATHS = {name: paths(template) for name, template in TEMPLATES.items()}


@st.composite
def shaped(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Any:
    """A source's event with some fields replaced by values of any type (or deleted)."""
    name = draw(st.sampled_from(sorted(TEMPLATES)))
    event = copy.deepcopy(TEMPLATES[name])
    for path in draw(st.lists(st.sampled_from(PATHS[name]), max_size=4)):
        parent = event
        for key in path[:-1]:
            if not isinstance(parent, dict | list):
                break
            try:
                parent = parent[key]
            except (KeyError, IndexError, TypeError):  # an earlier replacement changed the shape
                break
        else:
            if isinstance(parent, dict | list):
                try:
                    if draw(st.booleans()) and isinstance(parent, dict):
                        parent.pop(path[-1], None)
                    else:
                        parent[path[-1]] = draw(values)
                except (IndexError, TypeError):
                    pass
    return event


def map_and_build(event: Any, generic_paths: GenericPaths) -> Any:
    try:
        return build_item(map_event(event, generic_paths), ARRIVED, "ExpiresAt", 30)
    except PermanentFailure as failure:
        return failure


@settings(max_examples=500, deadline=None)
@given(shaped(VALUES))
def test_events_with_fields_of_any_type_map_or_fail_with_a_reason(event: Any) -> None:
    """Each source's event shape with random field types and odd values: an item or a PermanentFailure."""
    check([map_and_build(event, GenericPaths())])


@settings(max_examples=300, deadline=None)
@given(shaped(JSON_VALUES))
def test_shaped_events_through_the_whole_record_path(event: Any) -> None:
    """The same shapes as JSON bytes in a Kinesis record, through decoding: an item or a failure."""
    check(outcomes(kinesis_record(json.dumps(event, ensure_ascii=False).encode("utf-8"))))


@settings(max_examples=200, deadline=None)
@given(VALUES)
def test_any_value_maps_or_fails_with_a_reason(value: Any) -> None:
    """Any value where an event should be (a list, a number, an object of anything): item or failure."""
    check([map_and_build(value, GenericPaths())])
    check([map_and_build(value, GenericPaths(id="0.0", username="a.1.b", message="x", timestamp="a.b.c"))])


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(TEMPLATES)), st.sampled_from([1, 50, 500, 5000]))
def test_deeply_nested_fields_map_or_fail_with_a_reason(name: str, levels: int) -> None:
    """A field holding a structure nested thousands deep (repr and json would recurse) ends cleanly."""
    for path in PATHS[name]:
        event = copy.deepcopy(TEMPLATES[name])
        parent = event
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = deep(levels)
        check([map_and_build(event, GenericPaths())])


def test_deeply_nested_payload_bytes_fail_as_invalid_json() -> None:
    """Payload bytes nested 100,000 deep are invalid_json (json's RecursionError), not an escaped error."""
    [failure] = outcomes(kinesis_record(b"[" * 100_000 + b"]" * 100_000))
    assert isinstance(failure, PermanentFailure) and failure.reason == "invalid_json"


def test_payload_numbers_json_cannot_hold_fail_as_invalid_json() -> None:
    """A 5,000-digit integer and the NaN/Infinity literals are invalid_json, not a ValueError or a float."""
    for data in (b'{"id": ' + b"1" * 5000 + b"}", b'{"data": {"id": "1", "text": "t", "author_id": NaN}}', b"Infinity"):
        [failure] = outcomes(kinesis_record(data))
        assert isinstance(failure, PermanentFailure) and failure.reason == "invalid_json", data[:40]


HTML_FRAGMENTS = ["<", ">", "</", "<!", "<!--", "-->", "<![CDATA[", "]]>", "&", "&#", "&#x", ";", "p", "br", "script"]
HTML_FRAGMENTS += [" ", "=", "'", '"', "\ud800", "\x00", "9999999999", "<?", "/>", "&amp", "<p", "</p>", "<br>"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(HTML_FRAGMENTS), max_size=30).map("".join) | st.text(max_size=40))
def test_mastodon_content_of_any_markup_maps_or_fails_with_a_reason(content: str) -> None:
    """Broken HTML in a status (unclosed tags, stray entities, CDATA, NUL, lone surrogates): item or failure."""
    check([map_and_build(mastodon("x") | {"content": content}, GenericPaths())])
