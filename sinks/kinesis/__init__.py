"""The `kinesis` sink, split by concern: config, records (partition key, size, hash key), service (boto3 calls
-> typed outcomes), wire (the hot PutRecords path), shards + ratelimit (shard map, per-shard limits),
aggregate (KPL), retry (decision value, backoff), and the delivery engine: queues (per-shard queues, request
assembly), routing (the map as the engine uses it), settle (an outcome applied to its records), engine
(scheduler and sender threads) and sink (the Sink contract tying them together)."""

from __future__ import annotations

from sinks.kinesis.config import KinesisSinkConfig
from sinks.kinesis.sink import KinesisSink

__all__ = ["KinesisSink", "KinesisSinkConfig"]
