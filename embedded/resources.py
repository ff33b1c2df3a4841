"""Creates the stack's resources on the embedded endpoint from `infra.settings`, as the CDK stack does on AWS."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from infra.settings import StackSettings

# moto makes streams ACTIVE at once; real endpoints take seconds. Bounded so a broken endpoint fails loudly.
_STREAM_ACTIVE_TIMEOUT_S = 30.0
_STREAM_ACTIVE_POLL_S = 0.1
_DEFAULT_RETENTION_HOURS = 24


@dataclass(frozen=True)
class StackResources:
    stream_name: str
    stream_arn: str
    table_name: str
    dead_letter_queue_url: str
    function_arn: str


def create_resources(settings: StackSettings, *, kinesis: Any, dynamodb: Any, sqs: Any, region: str) -> StackResources:
    """Create (or reuse, when they exist) the stream, table and dead-letter queue of the stack."""
    stream_arn = _create_stream(settings, kinesis)
    _create_table(settings, dynamodb)
    queue_url = sqs.create_queue(QueueName=settings.dead_letter_queue_name)["QueueUrl"]
    account = stream_arn.split(":")[4]
    return StackResources(
        stream_name=settings.stream_name,
        stream_arn=stream_arn,
        table_name=settings.table_name,
        dead_letter_queue_url=queue_url,
        function_arn=f"arn:aws:lambda:{region}:{account}:function:{settings.function_name}",
    )


def _create_stream(settings: StackSettings, kinesis: Any) -> str:
    name = settings.stream_name
    try:
        kinesis.describe_stream_summary(StreamName=name)
    except kinesis.exceptions.ResourceNotFoundException:
        if settings.stream.shard_count is None:
            kinesis.create_stream(StreamName=name, StreamModeDetails={"StreamMode": "ON_DEMAND"})
        else:
            kinesis.create_stream(
                StreamName=name, ShardCount=settings.stream.shard_count, StreamModeDetails={"StreamMode": "PROVISIONED"}
            )
    summary = _wait_active(kinesis, name)
    if settings.stream.retention_hours > summary["RetentionPeriodHours"]:
        kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=settings.stream.retention_hours)
    arn: str = summary["StreamARN"]
    return arn


def _wait_active(kinesis: Any, name: str) -> Any:
    give_up = time.monotonic() + _STREAM_ACTIVE_TIMEOUT_S
    while True:
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return summary
        if time.monotonic() > give_up:
            raise TimeoutError(f"stream {name} is still {summary['StreamStatus']} after {_STREAM_ACTIVE_TIMEOUT_S:.0f}s")
        time.sleep(_STREAM_ACTIVE_POLL_S)


def _create_table(settings: StackSettings, dynamodb: Any) -> None:
    table = settings.table
    try:
        dynamodb.describe_table(TableName=settings.table_name)
        return
    except dynamodb.exceptions.ResourceNotFoundException:
        pass
    dynamodb.create_table(
        TableName=settings.table_name,
        AttributeDefinitions=[
            {"AttributeName": table.hash_key, "AttributeType": "S"},
            {"AttributeName": table.range_key, "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": table.hash_key, "KeyType": "HASH"},
            {"AttributeName": table.range_key, "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
        SSESpecification={"Enabled": True},
    )
    dynamodb.get_waiter("table_exists").wait(TableName=settings.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    dynamodb.update_time_to_live(
        TableName=settings.table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute}
    )
