"""Source `synthetic`: a load generator of realistic records (tweets, clickstream, IoT) at a configured rate.

Deterministic: record `index` is a function of (`seed`, `kind`, `population`, index) and its timestamp;
with `start_time` set the timestamps are too (start + index / rate), so the same config yields the same
bytes every run. Without it records carry the real clock. `position()` is the index of the next record,
so a restarted run (and `skip`) resumes exactly there. The generators: sources/synthetic_x.py (X API v2
stream lines, shared with `tweet-producer sample`), sources/synthetic_web.py, sources/synthetic_iot.py.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import Field

from sources.base import SkippedInput, Source, SourceConfig, SourceContext, SpoolSettings, register_source
from sources.pacing import AUTO_BURST_MAX, RateLimiter, auto_burst
from sources.synthetic_base import Timestamps
from sources.synthetic_iot import IotKind
from sources.synthetic_web import ClickstreamKind
from sources.synthetic_x import TweetKind

# Far above what one core generates (tens of thousands a second); a typo such as 1e9 is refused.
MAX_RATE = 1_000_000
MAX_BURST = AUTO_BURST_MAX
# Accounts, visitors or devices: the tweet accounts are built up front, so keep start-up bounded.
MAX_POPULATION = 100_000
MAX_SEED = 2**63 - 1
# With start_time and rate 0 (no rate to space the timestamps by), record times advance this much each.
FULL_SPEED_STEP_MS = 1.0
# Every record of every kind is far smaller; the property tests hold the generators to it.
MAX_RECORD_BYTES = 4096


class SyntheticSourceConfig(SourceConfig):
    """Generate records."""

    type: Literal["synthetic"] = "synthetic"
    kind: Literal["tweets", "clickstream", "iot"] = Field(
        default="tweets",
        description="tweets: X API v2 stream lines; clickstream: page views and clicks; iot: sensor telemetry.",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Same seed and config, same records.")
    rate: float = Field(default=0, ge=0, le=MAX_RATE, description="Records per second; 0 = as fast as the sink takes them.")
    count: int = Field(default=0, ge=0, description="Stop after this many records; 0 = endless.")
    spool: SpoolSettings = Field(
        default_factory=lambda: SpoolSettings(enabled=False), description="The durable spool (off unless enabled)."
    )
    burst: int = Field(
        default=0,
        ge=0,
        le=MAX_BURST,
        description="Records that may go back to back to catch up after falling behind; "
        "0 = what `rate` makes in 50 ms (at least 2).",
    )
    start_time: datetime | None = Field(
        default=None,
        description="Timestamps start here and advance 1/rate per record (1 ms at rate 0): fully deterministic output. "
        "Unset: the real clock. Without a time zone: UTC.",
    )
    population: int = Field(
        default=0,
        ge=0,
        le=MAX_POPULATION,
        description="Distinct accounts (tweets), visitors (clickstream) or devices (iot); 0 = 240, 5000, 100.",
    )


class _Kind(Protocol):
    def events(self, start: int) -> Iterator[dict[str, Any]]: ...

    def encode(self, event: dict[str, Any]) -> bytes: ...


_KINDS: dict[str, type[TweetKind] | type[ClickstreamKind] | type[IotKind]] = {
    "tweets": TweetKind,
    "clickstream": ClickstreamKind,
    "iot": IotKind,
}


def effective_burst(config: SyntheticSourceConfig) -> int:
    if config.burst:
        return config.burst
    return auto_burst(config.rate)


def _timestamps(config: SyntheticSourceConfig) -> Timestamps:
    step_ms = 1000.0 / config.rate if config.rate > 0 else FULL_SPEED_STEP_MS
    if config.start_time is None:
        return Timestamps(None, step_ms)
    start = config.start_time if config.start_time.tzinfo else config.start_time.replace(tzinfo=UTC)
    return Timestamps(round(start.timestamp() * 1000), step_ms)


def build_kind(config: SyntheticSourceConfig) -> _Kind:
    """The generator `config` describes (a new one: its timestamp state is its own)."""
    return _KINDS[config.kind](config.seed, config.population, _timestamps(config))


@register_source
class SyntheticSource(Source):
    config_model = SyntheticSourceConfig
    config: SyntheticSourceConfig

    def __init__(self, config: SyntheticSourceConfig) -> None:
        super().__init__(config)
        self._kind = build_kind(config)
        # Index of the next record: a restart after a crash resumes here (in memory, like the file source).
        self._next = 0

    def run(self, ctx: SourceContext) -> None:
        count = self.config.count
        limiter = RateLimiter(self.config.rate, effective_burst(self.config))
        encode = self._kind.encode
        events = self._kind.events(self._next)
        origin = f"synthetic:{self.config.kind}:"
        while not count or self._next < count:
            if not limiter.wait(ctx):
                return
            event = next(events)
            if not ctx.emit(encode(event), event, f"{origin}{self._next}"):
                return
            self._next += 1

    def position(self) -> int | None:
        """The index of the next record; None once `count` records were generated."""
        if self.config.count and self._next >= self.config.count:
            return None
        return self._next

    def skip(self, position: Hashable) -> SkippedInput | None:
        """Generate record `position` (for the dead-letter file) and resume after it."""
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            return None
        if self.config.count and position >= self.config.count:
            return None
        kind = build_kind(self.config)
        data = kind.encode(next(kind.events(position)))
        self._next = position + 1
        return SkippedInput(data, f"synthetic:{self.config.kind}:{position}")
