"""What every mapping produces (a Post) and the helpers they share: field access, timestamps, HTML."""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from processor.errors import UNMAPPABLE, PermanentFailure

# X v1.1's created_at, e.g. "Wed Oct 10 20:19:24 +0000 2018".
TWITTER_V1_TIME_FORMAT = "%a %b %d %H:%M:%S %z %Y"
# Python's ISO parser takes at most microseconds; some clients send nanoseconds.
_EXCESS_FRACTION = re.compile(r"(\.\d{6})\d+")
# Numeric generic timestamps above this are milliseconds (as seconds it would be the year 5138).
_EPOCH_MS_THRESHOLD = 100_000_000_000
# Payload values quoted in failure details: bounded in depth and length, so a field nested thousands deep
# or a megabyte long cannot make repr recurse or a detail balloon.
_BRIEF = reprlib.Repr()
_BRIEF.maxlevel = 3
_BRIEF.maxstring = 80
_BRIEF.maxother = 80
_BRIEF.maxlong = 40


@dataclass(frozen=True)
class Post:
    """One social-media post, source-independent: the content of one table item."""

    source: str
    username: str
    id: str
    message: str
    timestamp: datetime | None  # None: the item uses the record's arrival time (documented in items.py)
    author_id: str | None = None
    lang: str | None = None
    hashtags: tuple[str, ...] = field(default_factory=tuple)


def unmappable(source: str, detail: str) -> PermanentFailure:
    return PermanentFailure(UNMAPPABLE, f"{source}: {detail}")


def brief(value: Any) -> str:
    """A short repr of a payload value for failure details (never recurses deeply, never raises)."""
    try:
        return _BRIEF.repr(value)
    except Exception as exc:  # noqa: BLE001 - a detail must not turn one bad record into a crash
        return f"<{type(value).__name__}: {type(exc).__name__}>"


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def optional_text(value: Any) -> str | None:
    """A string field, or an integer id written as a number; anything else counts as absent."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # more digits than Python converts (4300): no id or text is that long
            return None
    return None


def required_text(source: str, obj: dict[str, Any], key: str, where: str = "") -> str:
    raw = obj.get(key)
    value = optional_text(raw)
    if value is None or value == "":
        problem = "missing or empty" if raw is None or raw == "" else f"not text or an integer ({brief(raw)}):"
        raise unmappable(source, f"{problem} {where}{key}")
    return value


def unique(tags: list[str]) -> tuple[str, ...]:
    """Tags in first-seen order without repeats or empty strings."""
    return tuple(dict.fromkeys(t for t in tags if t))


def parse_iso8601(value: str) -> datetime:
    """An ISO 8601 date-time (naive means UTC), in UTC. Raises ValueError."""
    parsed = datetime.fromisoformat(_EXCESS_FRACTION.sub(r"\1", value.strip()))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_twitter_v1(value: str) -> datetime:
    return datetime.strptime(value, TWITTER_V1_TIME_FORMAT).astimezone(UTC)


def parse_epoch(value: float) -> datetime:
    seconds = value / 1000 if value > _EPOCH_MS_THRESHOLD else value
    return datetime.fromtimestamp(seconds, UTC)


def parse_time(source: str, value: Any, *, twitter_v1: bool = False) -> datetime | None:
    """The post's time, or None when absent. A present but unreadable time is an error, not a guess."""
    if value is None:
        return None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return parse_epoch(float(value))
        if isinstance(value, str) and value.strip():
            return parse_twitter_v1(value) if twitter_v1 else parse_iso8601(value)
    except (ValueError, OverflowError, OSError) as exc:
        raise unmappable(source, f"unreadable timestamp {brief(value)} ({exc})") from exc
    raise unmappable(source, f"unreadable timestamp {brief(value)}")


class _TextExtractor(HTMLParser):
    """Mastodon's status HTML to plain text: paragraphs become blank lines, <br> a newline."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._paragraphs = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p":
            if self._paragraphs:
                self.parts.append("\n\n")
            self._paragraphs += 1

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)
