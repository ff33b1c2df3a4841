"""The stack's names and settings: the one definition the CDK stack and the embedded stack both read.

This module must stay free of heavy imports (no aws_cdk, no boto3): the daemon, the embedded stack and
the CDK app all import it, and a change here changes every one of them at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_STACK_NAME = "tweet-producer"

# CloudFormation stack names: letters, digits and hyphens, starting with a letter, at most 128 characters.
# Resource names derived from it (e.g. "<stack>-DDBEventProcessor", 64 characters for Lambda) must fit too.
STACK_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,44}$")

# Environment variable names the processor reads (set by the CDK stack and by the embedded stack).
ENV_TABLE_NAME = "TABLE_NAME"
ENV_DEAD_LETTER_QUEUE_URL = "DEAD_LETTER_QUEUE_URL"
ENV_TTL_ATTRIBUTE = "TTL_ATTRIBUTE"
ENV_TTL_DAYS = "TTL_DAYS"

StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]


@dataclass(frozen=True)
class StreamSettings:
    """The Kinesis stream: provisioned with `shard_count` shards, or on-demand when it is None."""

    shard_count: int | None = 1
    retention_hours: int = 24


@dataclass(frozen=True)
class TableSettings:
    """The DynamoDB table the processor writes: one item per tweet."""

    hash_key: str = "Username"
    range_key: str = "Id"
    ttl_attribute: str = "ExpiresAt"
    # 0 keeps items forever; otherwise the processor sets the TTL attribute this many days ahead.
    ttl_days: int = 0


@dataclass(frozen=True)
class EventSourceMappingSettings:
    """Lambda's Kinesis event source mapping; the embedded stack's runner applies the same values."""

    batch_size: int = 100
    maximum_batching_window_seconds: int = 1
    starting_position: StartingPosition = "TRIM_HORIZON"
    parallelization_factor: int = 1
    bisect_batch_on_function_error: bool = True
    maximum_retry_attempts: int = 5
    maximum_record_age_seconds: int = 86_400
    report_batch_item_failures: bool = True


@dataclass(frozen=True)
class FunctionSettings:
    """The event processor function."""

    handler: str = "processor.handler.handler"
    memory_mb: int = 256
    timeout_seconds: int = 60
    log_retention_days: int = 30


@dataclass(frozen=True)
class StackSettings:
    """Every name and setting of one deployment of the pipeline, derived from the stack name."""

    name: str = DEFAULT_STACK_NAME
    stream: StreamSettings = field(default_factory=StreamSettings)
    table: TableSettings = field(default_factory=TableSettings)
    function: FunctionSettings = field(default_factory=FunctionSettings)
    event_source_mapping: EventSourceMappingSettings = field(default_factory=EventSourceMappingSettings)

    def __post_init__(self) -> None:
        if not STACK_NAME_PATTERN.match(self.name):
            raise ValueError(
                f"stack name {self.name!r} must start with a letter and hold only letters, digits and "
                "hyphens (at most 45 characters, so that derived resource names fit AWS limits)"
            )

    @property
    def stream_name(self) -> str:
        return f"{self.name}-Stream"

    @property
    def table_name(self) -> str:
        return f"{self.name}-EventData"

    @property
    def function_name(self) -> str:
        return f"{self.name}-DDBEventProcessor"

    @property
    def dead_letter_queue_name(self) -> str:
        return f"{self.name}-DeadLetter"

    @property
    def producer_user_name(self) -> str:
        return f"{self.name}-producer"

    def processor_environment(self, dead_letter_queue_url: str | None = None) -> dict[str, str]:
        """The environment variables the processor function runs with."""
        env = {
            ENV_TABLE_NAME: self.table_name,
            ENV_TTL_ATTRIBUTE: self.table.ttl_attribute,
            ENV_TTL_DAYS: str(self.table.ttl_days),
        }
        if dead_letter_queue_url:
            env[ENV_DEAD_LETTER_QUEUE_URL] = dead_letter_queue_url
        return env
