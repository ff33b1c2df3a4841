"""The payloads Lambda exchanges with a Kinesis-triggered function: the event, the context, the response,
and the on-failure record. Shapes follow AWS's documentation of the Kinesis event source mapping."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

KINESIS_SCHEMA_VERSION = "1.0"
EVENT_VERSION = "1.0"
ON_FAILURE_VERSION = "1.0"
CONDITION_RETRIES_EXHAUSTED = "RetryAttemptsExhausted"
CONDITION_RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class StreamRecord:
    """A record as GetRecords returned it, with the arrival time as epoch seconds."""

    sequence_number: str
    partition_key: str
    data: bytes
    arrival: float

    @classmethod
    def from_get_records(cls, raw: dict[str, Any]) -> StreamRecord:
        return cls(raw["SequenceNumber"], raw["PartitionKey"], raw["Data"], _epoch(raw["ApproximateArrivalTimestamp"]))


@dataclass(frozen=True)
class EventSource:
    """What every event record of one mapping carries."""

    stream_arn: str
    region: str
    invoke_identity_arn: str

    def event(self, shard_id: str, records: list[StreamRecord]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "kinesis": {
                        "kinesisSchemaVersion": KINESIS_SCHEMA_VERSION,
                        "partitionKey": r.partition_key,
                        "sequenceNumber": r.sequence_number,
                        "data": base64.b64encode(r.data).decode("ascii"),
                        "approximateArrivalTimestamp": r.arrival,
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": EVENT_VERSION,
                    "eventID": f"{shard_id}:{r.sequence_number}",
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": self.invoke_identity_arn,
                    "awsRegion": self.region,
                    "eventSourceARN": self.stream_arn,
                }
                for r in records
            ]
        }

    def on_failure(
        self, shard_id: str, records: list[StreamRecord], condition: str, invocations: int, function_arn: str, error: str
    ) -> dict[str, Any]:
        """The record Lambda sends to the on-failure destination: metadata only, never the data."""
        return {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": function_arn,
                "condition": condition,
                "approximateInvokeCount": invocations,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": error},
            "version": ON_FAILURE_VERSION,
            "timestamp": _iso(time.time()),
            "KinesisBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": records[0].sequence_number,
                "endSequenceNumber": records[-1].sequence_number,
                "approximateArrivalOfFirstRecord": _iso(records[0].arrival),
                "approximateArrivalOfLastRecord": _iso(records[-1].arrival),
                "batchSize": len(records),
                "streamArn": self.stream_arn,
            },
        }


@dataclass
class LambdaContext:
    """The parts of Lambda's context object a handler uses; the remaining time counts down from the timeout."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_s: float
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.monotonic)

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self._started)) * 1000))
