"""Mappings from source payloads to Posts; `map_event` recognises the source by the payload's shape."""

from __future__ import annotations

from typing import Any

from processor.errors import UNMAPPABLE, PermanentFailure
from processor.mappings.bluesky import is_jetstream, map_jetstream
from processor.mappings.common import Post, brief
from processor.mappings.generic import GenericPaths, map_generic
from processor.mappings.mastodon import Deletion, is_mastodon, is_mastodon_delete, map_mastodon, map_mastodon_delete
from processor.mappings.x import is_v1, is_v2, map_v1, map_v2

__all__ = ["Deletion", "GenericPaths", "Post", "map_deletion", "map_event"]


def map_deletion(event: Any) -> Deletion | None:
    """The Deletion a decoded payload asks for, or None when it is not a delete record (then `map_event` it)."""
    if isinstance(event, dict) and is_mastodon_delete(event):
        return map_mastodon_delete(event)
    return None


def map_event(event: Any, generic: GenericPaths) -> Post:
    """The Post in one decoded JSON payload. Raises PermanentFailure(unmappable) naming what is missing."""
    if not isinstance(event, dict):
        raise PermanentFailure(UNMAPPABLE, f"payload is a JSON {type(event).__name__}, not an object")
    if is_v2(event):
        return map_v2(event)
    if is_v1(event):
        return map_v1(event)
    if is_jetstream(event):
        return map_jetstream(event)
    if is_mastodon(event):
        return map_mastodon(event)
    if "errors" in event and "data" not in event:
        # X streams send in-band error objects (e.g. operational-disconnect); they are not posts.
        raise PermanentFailure(UNMAPPABLE, f"x-v2: in-band error object {brief(event['errors'])}")
    return map_generic(event, generic)
