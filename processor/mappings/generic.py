"""Any other JSON object: fields found at configurable key paths.

Paths are dotted (`user.handle`); a numeric segment indexes a list (`authors.0.name`). Each path comes
from an environment variable, read when the processor's settings are built:

    GENERIC_USERNAME_PATH   (default "username")   required, hash key
    GENERIC_ID_PATH         (default "id")         required, range key (numbers are written as strings)
    GENERIC_MESSAGE_PATH    (default "text")       required
    GENERIC_TIMESTAMP_PATH  (default "timestamp")  ISO 8601, or epoch seconds/milliseconds as a number
    GENERIC_LANG_PATH       (default "lang")
    GENERIC_AUTHOR_ID_PATH  (default "author_id")
    GENERIC_HASHTAGS_PATH   (default "hashtags")   a list of strings (a leading '#' is dropped)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processor.errors import ConfigurationError
from processor.mappings.common import Post, as_list, optional_text, parse_time, unique, unmappable

SOURCE = "generic"
ENV_PREFIX = "GENERIC_"
_MISSING = object()
# A list index in a key path; more digits than this index no list a payload can hold.
_MAX_INDEX_DIGITS = 9


@dataclass(frozen=True)
class GenericPaths:
    """Where the generic mapping finds each field."""

    username: str = "username"
    id: str = "id"
    message: str = "text"
    timestamp: str = "timestamp"
    lang: str = "lang"
    author_id: str = "author_id"
    hashtags: str = "hashtags"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> GenericPaths:
        values: dict[str, str] = {}
        for name in cls.__dataclass_fields__:
            variable = f"{ENV_PREFIX}{name.upper()}_PATH"
            if variable in environ:
                path = environ[variable].strip()
                if not path or any(not part for part in path.split(".")):
                    raise ConfigurationError(f"{variable}={environ[variable]!r} must be a dotted key path such as 'user.name'")
                values[name] = path
        return cls(**values)


def lookup(obj: Any, path: str) -> Any:
    """The value at a dotted path, or _MISSING."""
    for part in path.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif (
            isinstance(obj, list)
            and part.isascii()
            and part.isdigit()
            and len(part) <= _MAX_INDEX_DIGITS
            and int(part) < len(obj)
        ):
            obj = obj[int(part)]
        else:
            return _MISSING
    return obj


def _text(event: dict[str, Any], path: str) -> str | None:
    value = lookup(event, path)
    return None if value is _MISSING else optional_text(value)


def _required(event: dict[str, Any], path: str, field_name: str) -> str:
    value = _text(event, path)
    if not value:
        raise unmappable(SOURCE, f"no {field_name} at key path {path!r} (set {ENV_PREFIX}{field_name.upper()}_PATH)")
    return value


def map_generic(event: dict[str, Any], paths: GenericPaths) -> Post:
    message = _text(event, paths.message)
    if message is None:
        raise unmappable(SOURCE, f"no message at key path {paths.message!r} (set {ENV_PREFIX}MESSAGE_PATH)")
    timestamp = lookup(event, paths.timestamp)
    hashtags = [(optional_text(t) or "").lstrip("#") for t in as_list(lookup(event, paths.hashtags))]
    return Post(
        source=SOURCE,
        username=_required(event, paths.username, "username"),
        id=_required(event, paths.id, "id"),
        message=message,
        timestamp=None if timestamp is _MISSING else parse_time(SOURCE, timestamp),
        author_id=_text(event, paths.author_id),
        lang=_text(event, paths.lang),
        hashtags=unique(hashtags),
    )
