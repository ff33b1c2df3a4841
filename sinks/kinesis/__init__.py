"""The `kinesis` sink, split by concern: config, entries (partition key, size), service (one PutRecords
call -> typed outcome), retry (decision value, backoff) and the sink that ties them together."""

from __future__ import annotations

from sinks.kinesis.config import KinesisSinkConfig
from sinks.kinesis.sink import KinesisSink

__all__ = ["KinesisSink", "KinesisSinkConfig"]
