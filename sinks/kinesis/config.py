"""The `kinesis` sink's configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from sinks.base import SinkConfig

# PutRecords limits (Kinesis API reference): 500 records per request; 10 MiB per request and per record
# (data + partition key) for a stream whose maximum record size was raised (UpdateMaxRecordSize), else
# 5 MiB per request and 1 MiB per record: the defaults.
MAX_RECORDS_PER_REQUEST = 500
DEFAULT_MAX_REQUEST_BYTES = 5 * 1024 * 1024
MAX_REQUEST_BYTES_LIMIT = 10 * 1024 * 1024
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
MAX_RECORD_BYTES_LIMIT = 10 * 1024 * 1024
# Stream names as the Kinesis API accepts them; a name outside this fails every call.
STREAM_NAME_PATTERN = r"^[a-zA-Z0-9_.-]+$"
# One path per bundled source's shape, so each keeps an author's (or visitor's, device's, status's) records in
# order on one shard: X v2, X v1.1, flat records, Jetstream (did), synthetic clickstream and iot, and last
# Mastodon (a status, its edits and its delete share the status id).
DEFAULT_PARTITION_KEY_PATHS = ("data.author_id", "user.id_str", "author_id", "did", "user_id", "device_id", "id")
# Per-shard write limits (Kinesis service quotas): 1,000 records/s and 1 MiB/s per shard.
SHARD_RECORDS_PER_SECOND = 1000
SHARD_BYTES_PER_SECOND = 1024 * 1024
DEFAULT_IN_FLIGHT = 4
# The embedded stack's moto endpoint loses records under concurrent PutRecords (see with_static_credentials).
EMBEDDED_IN_FLIGHT = 1
MAX_IN_FLIGHT = 64
# KPL aggregation: the KPL's own default aggregate size (50 KiB) keeps a failed aggregate cheap to re-send.
DEFAULT_AGGREGATE_BYTES = 51200
DEFAULT_AGGREGATE_RECORDS = 1000
DEFAULT_SHARD_MAP_REFRESH_S = 60.0


class RetryConfig(BaseModel):
    """Backoff between attempts: exponential from `initial_backoff`, capped at `max_backoff`, full jitter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_backoff: float = Field(default=0.1, gt=0, le=60, description="Seconds; the first retry waits up to this.")
    max_backoff: float = Field(default=10.0, gt=0, le=600, description="Seconds; no retry waits longer.")
    max_attempts: int = Field(
        default=0,
        ge=0,
        description="Failed attempts (throttled, 5xx, network) per record before it is dead-lettered; 0 = until "
        "delivered or shutdown. Refusals by the stream itself never count: those records are held.",
    )

    max_age: float = Field(
        default=0.0,
        ge=0,
        description="Seconds since a record's first send after which a failed record is dead-lettered "
        "(retries_exhausted) instead of retried; 0 = no age limit.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must not be smaller than initial_backoff")
        return self


class AggregationConfig(BaseModel):
    """KPL aggregation: user records bound for the same shard packed into one Kinesis record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="Pack records into KPL aggregated records (consumers must deaggregate).")
    max_bytes: int = Field(
        default=DEFAULT_AGGREGATE_BYTES, ge=1024, le=MAX_RECORD_BYTES_LIMIT,
        description="Bytes of one aggregated record (framing, keys and data); at most max_record_bytes.",
    )
    max_records: int = Field(
        default=DEFAULT_AGGREGATE_RECORDS, ge=1, le=100_000, description="User records per aggregated record."
    )


class ShardLimitsConfig(BaseModel):
    """What the sink lets through to each shard; Kinesis refuses more (ProvisionedThroughputExceeded)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    records_per_second: float = Field(
        default=SHARD_RECORDS_PER_SECOND, gt=0, description="Kinesis records per second per shard."
    )
    bytes_per_second: float = Field(
        default=SHARD_BYTES_PER_SECOND, ge=1024, description="Bytes (data + keys) per second per shard."
    )
    adaptive: bool = Field(
        default=True, description="Slow a shard down when it throttles and speed it up again as it accepts records."
    )


class ShardMapConfig(BaseModel):
    """How often the sink lists the stream's open shards (it also does when resharding shows)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    refresh_interval: float = Field(
        default=DEFAULT_SHARD_MAP_REFRESH_S, ge=1, le=86_400, description="Seconds between ListShards calls."
    )


class KinesisSinkConfig(SinkConfig):
    """Write records to a Kinesis data stream with PutRecords."""

    type: Literal["kinesis"] = "kinesis"
    stream: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=STREAM_NAME_PATTERN, description="Stream name (default: the stack's)."
    )
    region: str | None = Field(default=None, description="AWS region (default: the AWS chain's, or the embedded stack's).")
    endpoint_url: str | None = Field(default=None, description="Custom endpoint (default: AWS, or the embedded stack).")
    profile: str | None = Field(default=None, description="Named AWS profile; otherwise the standard credential chain.")
    partition_key: list[str] = Field(
        default=list(DEFAULT_PARTITION_KEY_PATHS),
        min_length=1,
        description="Dotted paths into the record tried in order; the first non-empty value is the key.",
    )
    linger: float = Field(
        default=0.2, ge=0, le=60, description="Seconds the oldest queued record may wait for a request to fill up."
    )
    max_batch_records: int = Field(
        default=MAX_RECORDS_PER_REQUEST, ge=1, le=MAX_RECORDS_PER_REQUEST, description="Records per PutRecords call (1-500)."
    )
    max_batch_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BYTES,
        ge=1024,
        le=MAX_REQUEST_BYTES_LIMIT,
        description="Bytes (data + partition keys) per call; above 5 MiB only for a stream with large records enabled.",
    )
    max_record_bytes: int = Field(
        default=DEFAULT_MAX_RECORD_BYTES,
        ge=1024,
        le=MAX_RECORD_BYTES_LIMIT,
        description="Data + partition key per record; larger records are dead-lettered (record_too_large). "
        "Above 1 MiB only for a stream whose maximum record size was raised.",
    )
    retry: RetryConfig = Field(
        default=RetryConfig(),
        description="Backoff and attempt limit for retriable failures; records refused by the stream itself "
        "(access, missing stream, KMS key, credentials) are held and retried without an attempt limit.",
    )
    in_flight: int = Field(
        default=DEFAULT_IN_FLIGHT, ge=1, le=MAX_IN_FLIGHT, description="PutRecords requests on the wire at the same time."
    )
    ordered: bool = Field(
        default=False,
        description="Records with the same partition key reach the stream in the order they came: one request "
        "in flight per shard, one record per key per request (or one aggregate per shard). Slower.",
    )
    aggregation: AggregationConfig = Field(default=AggregationConfig(), description="KPL aggregation.")
    shard_limits: ShardLimitsConfig = Field(default=ShardLimitsConfig(), description="Per-shard rate limits.")
    shard_map: ShardMapConfig = Field(default=ShardMapConfig(), description="Shard map refreshes.")
    connect_timeout: float = Field(default=5.0, gt=0, le=120, description="Seconds to open a connection.")
    read_timeout: float = Field(default=10.0, gt=0, le=300, description="Seconds to wait for a response.")
    # Not a config key: the daemon sets it (with_static_credentials) when the sink writes to the embedded
    # stack, whose endpoint takes fixed dummy keys; the user's AWS profile and credentials are then unused.
    _static_credentials: tuple[str, str] | None = PrivateAttr(default=None)

    @property
    def static_credentials(self) -> tuple[str, str] | None:
        """(access key id, secret access key) to sign with instead of the AWS credential chain."""
        return self._static_credentials

    def with_static_credentials(self, access_key_id: str, secret_access_key: str) -> KinesisSinkConfig:
        """A copy that signs with these keys and ignores the environment's AWS profile.

        Only the embedded stack takes such keys, and its Kinesis (moto's server) is not safe for concurrent
        writes: moto numbers a shard's records without a lock, so two PutRecords at once overwrite each
        other's records (seen: 1,995 of 2,000 accepted records readable). The copy keeps one request in flight.
        """
        copy = self.model_copy(update={"in_flight": EMBEDDED_IN_FLIGHT})
        copy._static_credentials = (access_key_id, secret_access_key)
        return copy

    @model_validator(mode="after")
    def _record_fits_request(self) -> KinesisSinkConfig:
        if self.max_record_bytes > self.max_batch_bytes:
            raise ValueError("max_record_bytes must not exceed max_batch_bytes (a record must fit in one request)")
        if self.aggregation.enabled and self.aggregation.max_bytes > self.max_record_bytes:
            raise ValueError("aggregation.max_bytes must not exceed max_record_bytes (an aggregate is one Kinesis record)")
        for path in self.partition_key:
            if any(not part.strip() for part in path.split(".")):
                raise ValueError(f"partition_key path {path!r} has an empty segment; paths are dotted names like data.author_id")
        return self
