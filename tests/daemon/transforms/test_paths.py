"""Field paths: parsing any text ends as a path or a ValueError; projection and copy-on-write edits."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.transforms.paths import (
    MAX_PATH_SEGMENTS,
    Segment,
    StepFailed,
    parse_path,
    project,
    projection_tree,
    rewrite,
)
from tests.daemon.transforms.tweets import tweet

KEYS = st.text(st.characters(blacklist_characters=".[]", blacklist_categories=["Cs"]), min_size=1, max_size=8)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abcd"), inner, max_size=4),
    max_leaves=20,
)
PATHS = st.lists(st.sampled_from("abcd"), min_size=1, max_size=3).map(".".join)


def test_parse_path_reads_keys_and_list_markers() -> None:
    """`includes.users[].id` is three keys, the second a list whose elements the rest applies to."""
    assert parse_path("includes.users[].id") == (Segment("includes", False), Segment("users", True), Segment("id", False))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("", "non-empty"), ("data..id", "empty key"), ("data.users[]", r"ends in '\[\]'"), ("a[0].b", "may not contain"),
     (".".join(["k"] * (MAX_PATH_SEGMENTS + 1)), "at most")],
)  # fmt: skip
def test_bad_paths_say_what_is_wrong(text: str, fragment: str) -> None:
    """Each malformed path is a ValueError whose message names the problem."""
    with pytest.raises(ValueError, match=fragment):
        parse_path(text)


@given(st.text(max_size=40))
def test_any_text_parses_or_is_a_value_error(text: str) -> None:
    """Whatever the text, parse_path returns a path of non-empty keys or raises ValueError, nothing else."""
    try:
        path = parse_path(text)
    except ValueError:
        return
    assert path and all(segment.key for segment in path) and not path[-1].each
    assert ".".join(s.key + ("[]" if s.each else "") for s in path) == text


@given(st.lists(KEYS, min_size=1, max_size=5), st.lists(st.booleans(), min_size=5, max_size=5))
def test_parse_path_round_trips(keys: list[str], each: list[bool]) -> None:
    """A path written from keys and list markers parses back to the same segments."""
    marks = [*each[: len(keys) - 1], False]
    text = ".".join(k + ("[]" if m else "") for k, m in zip(keys, marks, strict=True))
    assert parse_path(text) == tuple(Segment(k, m) for k, m in zip(keys, marks, strict=True))


def test_projection_keeps_the_listed_fields_in_record_order() -> None:
    """`fields` keeps only what is listed, inside lists too, in the record's own key order."""
    event = tweet()
    tree = projection_tree([parse_path(p) for p in ("includes.users[].username", "data.text", "data.id")])
    assert project(event, tree) == {
        "data": {"id": event["data"]["id"], "text": "東京で新しいリリース 🎉 مرحبا"},
        "includes": {"users": [{"username": "user_1"}]},
    }
    assert list(project(event, tree)["data"]) == ["id", "text"]


def test_projection_of_everything_returns_the_same_object() -> None:
    """Listing every top-level key keeps the record as it is: the very same object, so nothing is re-serialised."""
    event = tweet()
    assert project(event, projection_tree([parse_path(k) for k in event])) is event


def test_projection_through_a_non_object_fails_naming_the_place() -> None:
    """A path that goes through a string is a StepFailed naming that field."""
    with pytest.raises(StepFailed, match=r"data\.text is a string, not an object"):
        project(tweet(), projection_tree([parse_path("data.text.x")]))


def test_a_key_used_as_list_and_object_is_refused() -> None:
    """`users[].id` with `users.id` cannot both hold: ValueError at config time."""
    with pytest.raises(ValueError, match="both as a list"):
        projection_tree([parse_path("users[].id"), parse_path("users.id")])


@given(JSON, st.lists(PATHS, min_size=1, max_size=4))
def test_projection_never_changes_its_input_and_is_idempotent(event: Any, paths: list[str]) -> None:
    """Projecting leaves the input untouched, yields a sub-object, and projecting the result again changes nothing."""
    before = copy.deepcopy(event)
    tree = projection_tree([parse_path(p) for p in paths])
    try:
        once = project(event, tree)
    except StepFailed:
        return
    assert event == before
    assert project(once, tree) is once
    assert _is_subset(once, event)


def _is_subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _is_subset(v, big[k]) for k, v in small.items())
    return bool(small == big)


@given(JSON, PATHS)
def test_rewrite_copies_on_write_and_never_touches_its_input(event: Any, path: str) -> None:
    """Setting a value returns a new object where it changed and leaves the original exactly as it was."""
    before = copy.deepcopy(event)

    def leaf(node: dict[str, Any], name: str, where: str) -> dict[str, Any]:
        return {**node, name: "set"}

    try:
        after = rewrite(event, parse_path(path), leaf, create=True)
    except StepFailed:
        return
    assert event == before
    assert after is not event
