"""Bluesky Jetstream commit events that create or update an app.bsky.feed.post record."""

from __future__ import annotations

from typing import Any

from processor.mappings.common import (
    Post,
    as_dict,
    as_list,
    brief,
    optional_text,
    parse_time,
    required_text,
    unique,
    unmappable,
)

SOURCE = "jetstream"
POST_COLLECTION = "app.bsky.feed.post"
# Deletes carry no post; they are dead-lettered with this explanation rather than dropped unseen.
_STORED_OPERATIONS = ("create", "update")
_TAG_FACET = "app.bsky.richtext.facet#tag"
_MICROSECONDS_PER_SECOND = 1_000_000


def is_jetstream(event: dict[str, Any]) -> bool:
    return "did" in event and "time_us" in event and "kind" in event


def _hashtags(record: dict[str, Any]) -> tuple[str, ...]:
    tags: list[str] = []
    for facet in as_list(record.get("facets")):
        for feature in as_list(as_dict(facet).get("features")):
            feature = as_dict(feature)
            if feature.get("$type") == _TAG_FACET:
                tags.append(optional_text(feature.get("tag")) or "")
    tags.extend(optional_text(t) or "" for t in as_list(record.get("tags")))
    return unique(tags)


def map_jetstream(event: dict[str, Any]) -> Post:
    """Username = the author's DID (stable; handles change), Id = the record key."""
    did = required_text(SOURCE, event, "did")
    if event.get("kind") != "commit":
        raise unmappable(SOURCE, f"{brief(event.get('kind'))} event of {did} is not a post")
    commit = as_dict(event.get("commit"))
    if commit.get("collection") != POST_COLLECTION or commit.get("operation") not in _STORED_OPERATIONS:
        raise unmappable(
            SOURCE, f"{brief(commit.get('operation'))} on {brief(commit.get('collection'))} by {did} is not a new post"
        )
    rkey = required_text(SOURCE, commit, "rkey", "commit.")
    record = commit.get("record")
    if not isinstance(record, dict):
        raise unmappable(SOURCE, f"post {did}/{rkey} has no record")
    text = optional_text(record.get("text"))
    if text is None:
        raise unmappable(SOURCE, f"post {did}/{rkey} has no text")
    langs = [lang for lang in as_list(record.get("langs")) if isinstance(lang, str) and lang]
    timestamp = parse_time(SOURCE, record.get("createdAt"))
    time_us = event.get("time_us")
    if timestamp is None and isinstance(time_us, int) and not isinstance(time_us, bool):
        try:
            seconds = time_us / _MICROSECONDS_PER_SECOND
        except OverflowError:  # an integer beyond any float
            raise unmappable(SOURCE, f"unreadable timestamp time_us={brief(time_us)}") from None
        timestamp = parse_time(SOURCE, seconds)
    return Post(
        source=SOURCE,
        username=did,
        id=rkey,
        message=text,
        timestamp=timestamp,
        author_id=did,
        lang=langs[0] if langs else None,
        hashtags=_hashtags(record),
    )
