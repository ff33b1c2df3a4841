"""X API v2 filtered-stream lines for the transforms tests: non-Latin text, expansions and matching rules."""

from __future__ import annotations

import json
from typing import Any


def tweet(
    number: int = 1, lang: str = "ja", text: str = "東京で新しいリリース 🎉 مرحبا", likes: int = 42, tag: str = "releases"
) -> dict[str, Any]:
    """One tweet as the filtered stream sends it (data, includes.users, matching_rules)."""
    author = f"10017738{number:02d}"
    return {
        "data": {
            "id": f"18610000000000{number:05d}",
            "text": text,
            "author_id": author,
            "created_at": "2026-11-01T12:00:00.856Z",
            "lang": lang,
            "public_metrics": {"retweet_count": 3, "reply_count": 1, "like_count": likes, "quote_count": 0},
            "entities": {"hashtags": [{"start": 0, "end": 3, "tag": "東京"}]},
            "geo": {"place_id": "01a9a39529b27f36"},
        },
        "includes": {"users": [{"id": author, "name": "أحمد", "username": f"user_{number}"}]},
        "matching_rules": [{"id": "1861000000000000001", "tag": tag}],
    }


def line(event: Any) -> bytes:
    """The bytes a source reads for `event`: compact JSON, UTF-8, non-ASCII as it is (as X sends it)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
