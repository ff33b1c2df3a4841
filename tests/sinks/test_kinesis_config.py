"""KinesisSinkConfig: defaults as documented, unknown keys and out-of-range values rejected, registration."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sinks import SINK_TYPES, load_builtin_sinks
from sinks.kinesis import KinesisSink, KinesisSinkConfig
from sinks.kinesis.config import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    MAX_RECORD_BYTES_LIMIT,
    MAX_RECORDS_PER_REQUEST,
    MAX_REQUEST_BYTES_LIMIT,
)

MIB = 1024 * 1024


def test_defaults_follow_the_putrecords_limits() -> None:
    """An empty config gets 500 records / 5 MiB per request, 1 MiB per record, a key path per bundled source."""
    config = KinesisSinkConfig()
    assert config.type == "kinesis"
    assert (config.max_batch_records, config.max_batch_bytes, config.max_record_bytes) == (500, 5 * MIB, 1 * MIB)
    assert (MAX_RECORDS_PER_REQUEST, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RECORD_BYTES) == (500, 5 * MIB, MIB)
    assert (MAX_REQUEST_BYTES_LIMIT, MAX_RECORD_BYTES_LIMIT) == (10 * MIB, 10 * MIB)
    assert config.partition_key == ["data.author_id", "user.id_str", "author_id", "did", "user_id", "device_id", "id"]
    assert config.linger == 0.2
    assert (config.retry.initial_backoff, config.retry.max_backoff, config.retry.max_attempts) == (0.1, 10.0, 0)
    assert config.stream is None and config.profile is None and config.endpoint_url is None


def test_the_sink_registers_under_kinesis() -> None:
    """load_builtin_sinks makes the `kinesis` type resolve to KinesisSink and its config model."""
    load_builtin_sinks()
    assert SINK_TYPES["kinesis"] is KinesisSink
    assert KinesisSink.config_model is KinesisSinkConfig


@pytest.mark.parametrize(
    "fields",
    [
        {"streem": "typo"},
        {"retry": {"initial_backoff": 0.1, "jitter": "full"}},
        {"type": "firehose"},
    ],
    ids=["top-level", "in-retry", "wrong-type"],
)
def test_unknown_keys_and_other_types_are_rejected(fields: dict[str, Any]) -> None:
    """A misspelt key (at any level) or another sink's type is an error, not silently ignored."""
    with pytest.raises(ValidationError):
        KinesisSinkConfig.model_validate(fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_batch_records": 0},
        {"max_batch_records": 501},
        {"max_batch_bytes": 10 * MIB + 1},
        {"max_batch_bytes": 0},
        {"max_record_bytes": 10 * MIB + 1},
        {"max_record_bytes": 0},
        {"linger": -0.1},
        {"connect_timeout": 0},
        {"read_timeout": -1},
        {"stream": ""},
        {"stream": "tweets stream"},
        {"stream": "tweets/prod"},
        {"partition_key": []},
        {"retry": {"initial_backoff": 0}},
        {"retry": {"max_backoff": -1}},
        {"retry": {"max_attempts": -1}},
        {"retry": {"initial_backoff": 2, "max_backoff": 1}},
    ],
    ids=lambda fields: ",".join(f"{k}={v}" for k, v in fields.items()),
)
def test_out_of_range_values_are_rejected(fields: dict[str, Any]) -> None:
    """Limits beyond what PutRecords allows, non-positive timeouts and inverted backoff are config errors."""
    with pytest.raises(ValidationError):
        KinesisSinkConfig.model_validate(fields)


def test_a_record_limit_above_the_request_limit_is_rejected() -> None:
    """max_record_bytes > max_batch_bytes is refused: such a record could never fit in one request."""
    with pytest.raises(ValidationError, match="max_record_bytes"):
        KinesisSinkConfig(max_batch_bytes=MIB, max_record_bytes=2 * MIB)
    assert KinesisSinkConfig(max_batch_bytes=2 * MIB, max_record_bytes=2 * MIB).max_record_bytes == 2 * MIB


@pytest.mark.parametrize("path", ["", " ", ".data", "data.", "data..author_id"])
def test_malformed_partition_key_paths_are_rejected(path: str) -> None:
    """Each partition key path is a dotted name: empty segments are an error."""
    with pytest.raises(ValidationError, match="partition_key"):
        KinesisSinkConfig(partition_key=["author_id", path])


def test_edge_values_within_range_are_accepted() -> None:
    """The limits themselves are valid: one record per batch, 5 MiB requests, max_attempts 1."""
    config = KinesisSinkConfig.model_validate(
        {"max_batch_records": 1, "max_batch_bytes": 5 * MIB, "max_record_bytes": 5 * MIB, "linger": 0,
         "retry": {"initial_backoff": 0.5, "max_backoff": 0.5, "max_attempts": 1}}
    )
    assert (config.max_batch_records, config.max_record_bytes, config.retry.max_attempts) == (1, 5 * MIB, 1)


@pytest.mark.parametrize(
    ("batch", "record"),
    [(10 * MIB, 10 * MIB), (10 * MIB, 6 * MIB), (8 * MIB, 8 * MIB), (10 * MIB, MIB)],
    ids=["both-10MiB", "record-6MiB", "both-8MiB", "request-10MiB-record-default"],
)
def test_large_records_up_to_10_mib_are_accepted(batch: int, record: int) -> None:
    """Streams with large records take 10 MiB requests and records: such configs validate (record <= request)."""
    config = KinesisSinkConfig(max_batch_bytes=batch, max_record_bytes=record)
    assert (config.max_batch_bytes, config.max_record_bytes) == (batch, record)


def test_a_large_record_still_needs_a_request_as_large() -> None:
    """max_record_bytes 8 MiB with the default 5 MiB request is refused, naming both keys' rule."""
    with pytest.raises(ValidationError, match="max_record_bytes must not exceed max_batch_bytes"):
        KinesisSinkConfig(max_record_bytes=8 * MIB)


def test_the_v2_keys_have_their_documented_defaults() -> None:
    """in_flight 4, unordered, aggregation off (50 KiB, 1000 records), 1000 records/s and 1 MiB/s per shard,
    adaptive, shard map every 60 s, no age limit."""
    config = KinesisSinkConfig()
    assert (config.in_flight, config.ordered) == (4, False)
    assert (config.aggregation.enabled, config.aggregation.max_bytes, config.aggregation.max_records) == (False, 51200, 1000)
    limits = config.shard_limits
    assert (limits.records_per_second, limits.bytes_per_second, limits.adaptive) == (1000, 1048576, True)
    assert (config.shard_map.refresh_interval, config.retry.max_age) == (60, 0)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"in_flight": 0}, "in_flight"),
        ({"aggregation": {"enabled": True, "max_bytes": 2 * MIB}}, "aggregation.max_bytes must not exceed max_record_bytes"),
        ({"aggregation": {"enabled": True, "size": 5}}, "size"),
        ({"shard_limits": {"records_per_second": 0}}, "records_per_second"),
        ({"shard_map": {"refresh_interval": 0.1}}, "refresh_interval"),
        ({"retry": {"max_age": -1}}, "max_age"),
    ],
    ids=["no-slots", "aggregate-over-record", "unknown-key", "zero-rate", "refresh-too-often", "negative-age"],
)
def test_the_v2_keys_are_validated(fields: dict[str, Any], problem: str) -> None:
    """Out-of-range or unknown v2 keys are refused, naming the key or the rule."""
    with pytest.raises(ValidationError, match=problem):
        KinesisSinkConfig.model_validate(fields)


def test_the_embedded_stack_gets_one_request_in_flight() -> None:
    """with_static_credentials (only the embedded stack's moto endpoint) keeps one request in flight: moto
    numbers a shard's records without a lock and loses records under concurrent PutRecords."""
    config = KinesisSinkConfig(in_flight=8).with_static_credentials("key", "secret")
    assert config.in_flight == 1 and config.static_credentials == ("key", "secret")
