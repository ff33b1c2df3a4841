"""Posts to DynamoDB items (typed attribute values), with the checks DynamoDB would otherwise fail a call on.

Determinism: an item depends only on the record's content and its Kinesis metadata, never on when it
is processed. `IngestedAt` is the record's approximateArrivalTimestamp (when the stream accepted it),
and the TTL counts from that same instant. So a retried or replayed record rewrites an identical item.
A post that reaches the stream twice (two records) keeps the later record's IngestedAt: last write wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from processor.errors import INVALID_TEXT, ITEM_TOO_LARGE, KEY_TOO_LARGE, PermanentFailure
from processor.mappings import Deletion, Post

HASH_KEY = "Username"
RANGE_KEY = "Id"
# DynamoDB limits (developer guide, "Service, account, and table quotas").
MAX_ITEM_BYTES = 400 * 1024
MAX_PARTITION_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024
# A number attribute takes at most 21 bytes; a list takes 3 bytes plus 1 per element.
_NUMBER_MAX_BYTES = 21
_LIST_OVERHEAD_BYTES = 3
_LIST_ELEMENT_OVERHEAD_BYTES = 1
SECONDS_PER_DAY = 86_400

Item = dict[str, dict[str, Any]]


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a `Z`: 2024-05-01T12:00:00.000Z (sorts as text)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utf8_length(name: str, value: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates from JSON escapes such as "\ud800"
        raise PermanentFailure(INVALID_TEXT, f"{name} is not valid Unicode text ({exc.reason} at {exc.start})") from None


def item_size(item: Item) -> int:
    """DynamoDB's size of an item: names plus values (numbers counted at their maximum)."""
    size = 0
    for name, value in item.items():
        size += _utf8_length("attribute name", name)
        if "S" in value:
            size += _utf8_length(name, value["S"])
        elif "N" in value:
            size += _NUMBER_MAX_BYTES
        elif "L" in value:
            size += _LIST_OVERHEAD_BYTES
            for element in value["L"]:
                size += _LIST_ELEMENT_OVERHEAD_BYTES + _utf8_length(name, element["S"])
        else:  # pragma: no cover - build_item only writes S, N and L of S
            raise TypeError(f"unexpected attribute type in {name}: {sorted(value)}")
    return size


def build_item(
    post: Post, arrival: datetime, ttl_attribute: str | None, ttl_days: int, extra: Mapping[str, str] | None = None
) -> Item:
    """The table item for a post that reached the stream at `arrival`; raises PermanentFailure if DynamoDB
    could not store it (invalid text, a key or the item over DynamoDB's limits). `extra`: more text attributes
    (the producer's envelope: its source name and receive time), never replacing the item's own."""
    item: Item = {
        HASH_KEY: {"S": post.username},
        RANGE_KEY: {"S": post.id},
        "Timestamp": {"S": format_time(post.timestamp or arrival)},
        "Message": {"S": post.message},
        "Hashtags": {"L": [{"S": tag} for tag in post.hashtags]},
        "Source": {"S": post.source},
        "IngestedAt": {"S": format_time(arrival)},
    }
    if post.lang:
        item["Lang"] = {"S": post.lang}
    if post.author_id:
        item["AuthorId"] = {"S": post.author_id}
    if ttl_attribute and ttl_days > 0:
        item[ttl_attribute] = {"N": str(int(arrival.timestamp()) + ttl_days * SECONDS_PER_DAY)}
    for name, value in (extra or {}).items():
        if value and name not in item:
            item[name] = {"S": value}
    _check_key(item)
    size = item_size(item)
    if size > MAX_ITEM_BYTES:
        raise PermanentFailure(
            ITEM_TOO_LARGE, f"item {post.id} of {post.username} is {size} bytes; DynamoDB allows {MAX_ITEM_BYTES}"
        )
    return item


def build_key(deletion: Deletion) -> Item:
    """The key of the item a deletion removes (its author must be known); raises PermanentFailure like build_item."""
    if not deletion.username:
        raise ValueError("a deletion without a username has no key")
    key: Item = {HASH_KEY: {"S": deletion.username}, RANGE_KEY: {"S": deletion.id}}
    _check_key(key)
    return key


def _check_key(item: Item) -> None:
    for name, limit in ((HASH_KEY, MAX_PARTITION_KEY_BYTES), (RANGE_KEY, MAX_SORT_KEY_BYTES)):
        length = _utf8_length(name, item[name]["S"])
        if length > limit:
            raise PermanentFailure(KEY_TOO_LARGE, f"{name} is {length} bytes; DynamoDB allows {limit}")


def item_key(item: Item) -> tuple[str, str]:
    return item[HASH_KEY]["S"], item[RANGE_KEY]["S"]
