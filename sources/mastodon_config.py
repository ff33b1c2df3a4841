"""The configuration of source `mastodon` (sources/mastodon.py): keys, defaults, limits and their rules."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from sources.base import SourceConfig, SpoolSettings

DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
MAX_EVENT_BYTES_LIMIT = 10 * 1024 * 1024
# Mastodon sends a heartbeat every ~15 s: four missed ones mean the connection is dead.
DEFAULT_STALL_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_RECONNECT_INITIAL_S = 1.0
DEFAULT_RECONNECT_MAX_S = 60.0
# A rejected token will not fix itself within seconds; retry slowly so a typo does not hammer the server.
DEFAULT_AUTH_BACKOFF_S = 300.0
AUTH_BACKOFF_MAX_S = 6 * 3600.0
# Mastodon's rate limits reset every 5 minutes.
DEFAULT_RATE_LIMIT_BACKOFF_S = 60.0
RATE_LIMIT_BACKOFF_MAX_S = 900.0
DEFAULT_BACKFILL_PAGES = 5
MAX_BACKFILL_PAGES = 100
_HASHTAG = re.compile(r"\w{1,100}")


class MastodonSourceConfig(SourceConfig):
    """Stream a Mastodon timeline."""

    type: Literal["mastodon"] = "mastodon"
    instance: str = Field(description="The server's base URL (`https://mastodon.social`; a bare host means https).")
    access_token: SecretStr = Field(
        description="A user access token (`${MASTODON_TOKEN}`); Mastodon >= 4.2 requires one for every stream."
    )
    timeline: Literal["public", "local", "hashtag"] = Field(
        default="public", description="`public` (federated), `local` (this server's users) or `hashtag`."
    )
    hashtag: str | None = Field(default=None, description="The tag for `timeline: hashtag`, without `#`.")
    only_media: bool = Field(default=False, description="Only statuses with media (public and local timelines).")
    spool: SpoolSettings = Field(default_factory=SpoolSettings, description="The durable spool (a stream cannot be replayed).")
    streaming_url: str | None = Field(
        default=None,
        description="Streaming server base URL; default: `configuration.urls.streaming` of `/api/v2/instance`, "
        "else the instance.",
    )
    max_event_bytes: int = Field(
        default=DEFAULT_MAX_EVENT_BYTES, gt=0, le=MAX_EVENT_BYTES_LIMIT, description="Larger events are rejected."
    )
    stall_timeout: float = Field(
        default=DEFAULT_STALL_TIMEOUT_S, gt=0, le=3600, description="Seconds without data or heartbeat before reconnecting."
    )
    connect_timeout: float = Field(default=DEFAULT_CONNECT_TIMEOUT_S, gt=0, le=300, description="Seconds to connect.")
    reconnect_initial: float = Field(
        default=DEFAULT_RECONNECT_INITIAL_S,
        gt=0,
        le=3600,
        description="First delay after a network error or stall (doubles, jittered).",
    )
    reconnect_max: float = Field(default=DEFAULT_RECONNECT_MAX_S, gt=0, le=86400, description="Longest such delay.")
    auth_backoff: float = Field(
        default=DEFAULT_AUTH_BACKOFF_S, gt=0, le=AUTH_BACKOFF_MAX_S, description="First delay after 401/403 (doubles up to 6 h)."
    )
    rate_limit_backoff: float = Field(
        default=DEFAULT_RATE_LIMIT_BACKOFF_S,
        gt=0,
        le=RATE_LIMIT_BACKOFF_MAX_S,
        description="First delay after 429 without Retry-After (doubles up to 15 min).",
    )
    backfill_pages: int = Field(
        default=DEFAULT_BACKFILL_PAGES,
        ge=0,
        le=MAX_BACKFILL_PAGES,
        description="On each connection after a status was seen, refill the gap with up to this many timeline pages "
        "(40 statuses); 0 = off.",
    )

    @field_validator("instance", "streaming_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip().rstrip("/")
        if "://" not in url:
            url = f"https://{url}"
        parts = urlsplit(url)
        if parts.scheme in ("ws", "wss"):
            url = url.replace(parts.scheme, "http" if parts.scheme == "ws" else "https", 1)
            parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"must be an http(s) base URL such as https://mastodon.social, not {value!r}")
        return url

    @field_validator("access_token")
    @classmethod
    def _token_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty (set it from the environment: ${MASTODON_TOKEN})")
        return value

    @model_validator(mode="after")
    def _timeline_options(self) -> MastodonSourceConfig:
        if self.timeline == "hashtag":
            if not self.hashtag or not _HASHTAG.fullmatch(self.hashtag.lstrip("#")):
                raise ValueError("timeline hashtag needs `hashtag:` (letters, digits, underscores; without #)")
            if self.only_media:
                raise ValueError("only_media applies to the public and local timelines, not to hashtag")
        elif self.hashtag is not None:
            raise ValueError(f"hashtag is only used with timeline: hashtag (timeline is {self.timeline})")
        return self
