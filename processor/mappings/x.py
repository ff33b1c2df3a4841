"""X (Twitter): API v2 stream lines and v1.1 statuses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from processor.mappings.common import (
    Post,
    as_dict,
    as_list,
    optional_text,
    parse_time,
    required_text,
    unique,
    unmappable,
)

SOURCE_V2 = "x-v2"
SOURCE_V1 = "x-v1.1"
# Snowflake ids carry their creation time: (id >> 22) milliseconds after this epoch (2010-11-04).
SNOWFLAKE_EPOCH_MS = 1_288_834_974_657
_SNOWFLAKE_TIME_SHIFT = 22
# A snowflake is a 64-bit integer: at most 20 digits. Longer digit strings are not ids to take a time from
# (and past 4300 digits int() itself refuses them).
_SNOWFLAKE_MAX_DIGITS = 20


def _snowflake_time(tweet_id: str) -> datetime | None:
    """The creation time encoded in a tweet id, for payloads without created_at."""
    is_number = len(tweet_id) <= _SNOWFLAKE_MAX_DIGITS and tweet_id.isascii() and tweet_id.isdigit()
    offset_ms = int(tweet_id) >> _SNOWFLAKE_TIME_SHIFT if is_number else 0
    if not offset_ms:  # not a snowflake (pre-2010 ids are small sequential numbers)
        return None
    try:
        return datetime.fromtimestamp((offset_ms + SNOWFLAKE_EPOCH_MS) / 1000, UTC)
    except (OverflowError, OSError, ValueError):  # digits, but no real id: no time to take from it
        return None


def is_v2(event: dict[str, Any]) -> bool:
    return isinstance(event.get("data"), dict)


def map_v2(event: dict[str, Any]) -> Post:
    """`{"data": tweet, "includes": {"users": [...]}}`: Username is the author's handle, else author_id."""
    data = event["data"]
    tweet_id = required_text(SOURCE_V2, data, "id", "data.")
    author_id = optional_text(data.get("author_id"))
    username = None
    for user in as_list(as_dict(event.get("includes")).get("users")):
        user = as_dict(user)
        if author_id is not None and optional_text(user.get("id")) == author_id:
            username = optional_text(user.get("username"))
            break
    username = username or author_id
    if not username:
        raise unmappable(SOURCE_V2, f"tweet {tweet_id} has neither an author_id nor an included author")
    # Long posts carry their full text in note_tweet; data.text is then truncated.
    message = optional_text(as_dict(data.get("note_tweet")).get("text"))
    if message is None:
        message = optional_text(data.get("text"))
    if message is None:
        raise unmappable(SOURCE_V2, f"tweet {tweet_id} has no text")
    hashtags = [optional_text(as_dict(h).get("tag")) or "" for h in as_list(as_dict(data.get("entities")).get("hashtags"))]
    return Post(
        source=SOURCE_V2,
        username=username,
        id=tweet_id,
        message=message,
        timestamp=parse_time(SOURCE_V2, data.get("created_at")) or _snowflake_time(tweet_id),
        author_id=author_id,
        lang=optional_text(data.get("lang")),
        hashtags=unique(hashtags),
    )


def is_v1(event: dict[str, Any]) -> bool:
    return "id_str" in event and isinstance(event.get("user"), dict)


def map_v1(event: dict[str, Any]) -> Post:
    """A v1.1 status: user.screen_name, id_str, created_at in Twitter's format, the fullest text."""
    tweet_id = required_text(SOURCE_V1, event, "id_str")
    user = event["user"]
    username = required_text(SOURCE_V1, user, "screen_name", "user.")
    extended = as_dict(event.get("extended_tweet"))
    message = optional_text(extended.get("full_text"))
    for key in ("full_text", "text"):
        if message is None:
            message = optional_text(event.get(key))
    if message is None:
        raise unmappable(SOURCE_V1, f"status {tweet_id} has no text")
    entities = as_dict(extended.get("entities")) or as_dict(event.get("entities"))
    hashtags = [optional_text(as_dict(h).get("text")) or "" for h in as_list(entities.get("hashtags"))]
    return Post(
        source=SOURCE_V1,
        username=username,
        id=tweet_id,
        message=message,
        timestamp=parse_time(SOURCE_V1, event.get("created_at"), twitter_v1=True) or _snowflake_time(tweet_id),
        author_id=optional_text(user.get("id_str")) or optional_text(user.get("id")),
        lang=optional_text(event.get("lang")),
        hashtags=unique(hashtags),
    )
