"""Mappings from source payloads to Posts; `map_event` recognises the source by the payload's shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processor.errors import UNMAPPABLE, PermanentFailure
from processor.mappings.bluesky import is_jetstream, map_jetstream
from processor.mappings.common import Post, brief
from processor.mappings.generic import GenericPaths, map_generic
from processor.mappings.mastodon import Deletion, is_mastodon, is_mastodon_delete, map_mastodon, map_mastodon_delete
from processor.mappings.x import is_v1, is_v2, map_v1, map_v2

__all__ = ["Deletion", "Envelope", "GenericPaths", "Post", "map_deletion", "map_event", "unwrap_envelope"]

# The keys of the producer's envelope (a source's `add: {envelope: true}` transform), exactly these three.
_ENVELOPE_KEYS = frozenset(("source", "received_at", "payload"))


@dataclass(frozen=True)
class Envelope:
    """What the producer's envelope said about its payload: the producer's source name and receive time."""

    source: str
    received_at: str


def unwrap_envelope(event: Any) -> tuple[Any, Envelope | None]:
    """(payload, envelope) for a record the producer wrapped as {source, received_at, payload}; else (event, None).

    Only an object of exactly those three keys with text in source and received_at counts: a post that happens
    to have a `payload` field is mapped as it is.
    """
    if (
        isinstance(event, dict)
        and event.keys() == _ENVELOPE_KEYS
        and isinstance(event["source"], str)
        and isinstance(event["received_at"], str)
    ):
        return event["payload"], Envelope(event["source"], event["received_at"])
    return event, None


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
