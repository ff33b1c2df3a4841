"""The embedded stack's resources are exactly those infra.settings defines (the CDK stack's definition)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from embedded.endpoint import EmbeddedEndpoint, EndpointUnavailable, embedded_client
from embedded.resources import create_resources
from infra.settings import StackSettings, StreamSettings

pytestmark = pytest.mark.slow


def clients(embedded_endpoint: EmbeddedEndpoint) -> dict[str, object]:
    return {name: embedded_client(name, embedded_endpoint.url, "us-east-1") for name in ("kinesis", "dynamodb", "sqs")}


def test_resources_match_the_stack_settings(embedded_endpoint: EmbeddedEndpoint) -> None:
    """Stream, table (keys, billing, TTL) and dead-letter queue carry the names and settings of infra.settings."""
    settings = replace(StackSettings(name="drift-check"), stream=StreamSettings(shard_count=2, retention_hours=48))
    c = clients(embedded_endpoint)
    resources = create_resources(settings, region="us-east-1", **c)  # type: ignore[arg-type]

    stream = c["kinesis"].describe_stream_summary(StreamName="drift-check-Stream")["StreamDescriptionSummary"]  # type: ignore[attr-defined]
    assert (stream["OpenShardCount"], stream["RetentionPeriodHours"]) == (2, 48)
    assert resources.stream_arn == stream["StreamARN"]

    table = c["dynamodb"].describe_table(TableName="drift-check-EventData")["Table"]  # type: ignore[attr-defined]
    assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {"Username": "HASH", "Id": "RANGE"}
    assert {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]} == {"Username": "S", "Id": "S"}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = c["dynamodb"].describe_time_to_live(TableName="drift-check-EventData")["TimeToLiveDescription"]  # type: ignore[attr-defined]
    assert ttl["AttributeName"] == settings.table.ttl_attribute

    assert resources.dead_letter_queue_url.endswith("/drift-check-DeadLetter")
    assert resources.function_arn.endswith(":function:drift-check-DDBEventProcessor")


def test_creating_twice_reuses_existing_resources(embedded_endpoint: EmbeddedEndpoint) -> None:
    """A second create_resources on the same endpoint finds the resources and changes nothing."""
    settings = StackSettings(name="again")
    c = clients(embedded_endpoint)
    first = create_resources(settings, region="us-east-1", **c)  # type: ignore[arg-type]
    assert create_resources(settings, region="us-east-1", **c) == first  # type: ignore[arg-type]


def test_on_demand_stream_when_no_shard_count(embedded_endpoint: EmbeddedEndpoint) -> None:
    """shard_count None in the settings creates an on-demand stream, as the CDK stack does."""
    settings = replace(StackSettings(name="ondemand"), stream=StreamSettings(shard_count=None))
    c = clients(embedded_endpoint)
    create_resources(settings, region="us-east-1", **c)  # type: ignore[arg-type]
    summary = c["kinesis"].describe_stream_summary(StreamName="ondemand-Stream")["StreamDescriptionSummary"]  # type: ignore[attr-defined]
    assert summary["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"


def test_taken_port_is_a_clear_error(embedded_endpoint: EmbeddedEndpoint) -> None:
    """Listening where another server already listens fails with a message naming the address."""
    with pytest.raises(EndpointUnavailable, match=f"127.0.0.1:{embedded_endpoint.port}"):
        EmbeddedEndpoint("127.0.0.1", embedded_endpoint.port).start()
