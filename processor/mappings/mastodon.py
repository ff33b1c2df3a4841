"""Mastodon statuses (the `update` events of the streaming API): HTML content becomes plain text.

The source also ships `delete` events as records of their own, `{"event": "delete", "id", "instance", "acct"?}`
(sources/mastodon.py): they become a `Deletion` of the item keyed (acct, id). `acct` is only there when the
source saw the status; without it the item cannot be found (the table is keyed by username first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processor.mappings.common import (
    Post,
    as_dict,
    as_list,
    html_to_text,
    optional_text,
    parse_time,
    required_text,
    unique,
    unmappable,
)

SOURCE = "mastodon"
DELETE_EVENT = "delete"


@dataclass(frozen=True)
class Deletion:
    """A post its author deleted: the item (username, id) goes from the table; None = author unknown."""

    source: str
    username: str | None
    id: str


def is_mastodon(event: dict[str, Any]) -> bool:
    return isinstance(event.get("account"), dict) and "content" in event


def map_mastodon(event: dict[str, Any]) -> Post:
    """Username = account.acct (user@instance for remote accounts); a boost carries the boosted text.

    A content warning (spoiler_text) is part of what the author wrote: it precedes the text, separated
    by a blank line.
    """
    status_id = required_text(SOURCE, event, "id")
    account = event["account"]
    acct = required_text(SOURCE, account, "acct", "account.")
    content_of = as_dict(event.get("reblog")) or event
    content = optional_text(content_of.get("content"))
    if content is None:
        raise unmappable(SOURCE, f"status {status_id} has no content")
    spoiler = optional_text(content_of.get("spoiler_text")) or ""
    message = html_to_text(content)
    if spoiler:
        message = f"{spoiler}\n\n{message}"
    tags = [optional_text(as_dict(t).get("name")) or "" for t in as_list(content_of.get("tags"))]
    return Post(
        source=SOURCE,
        username=acct,
        id=status_id,
        message=message,
        timestamp=parse_time(SOURCE, event.get("created_at")),
        author_id=optional_text(account.get("id")),
        lang=optional_text(content_of.get("language")),
        hashtags=unique(tags),
    )


def is_mastodon_delete(event: dict[str, Any]) -> bool:
    return event.get("event") == DELETE_EVENT and "instance" in event and "id" in event and "content" not in event


def map_mastodon_delete(event: dict[str, Any]) -> Deletion:
    """The deletion a delete record asks for; an empty or non-text `acct` counts as unknown."""
    status_id = required_text(SOURCE, event, "id")
    acct = optional_text(event.get("acct")) or None
    return Deletion(source=SOURCE, username=acct, id=status_id)
