"""Placeholder (the WIRE helper's module replaces it): PutRecords through a boto3 client, thread-safe."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Protocol

import boto3
from botocore.config import Config

from sinks.kinesis.service import KinesisService, PutOutcome


class WireRecord(Protocol):
    @property
    def data(self) -> bytes: ...

    partition_key: str
    explicit_hash_key: str | None


def encode_put_records(stream: str, records: Sequence[WireRecord]) -> bytes:
    items = []
    for r in records:
        item = {"Data": base64.b64encode(r.data).decode("ascii"), "PartitionKey": r.partition_key}
        if r.explicit_hash_key is not None:
            item["ExplicitHashKey"] = r.explicit_hash_key
        items.append(item)
    return json.dumps({"StreamName": stream, "Records": items}).encode("utf-8")


class PutRecordsClient:
    def __init__(self, session: boto3.Session, region: str, endpoint_url: str, *, connect_timeout: float,
                 read_timeout: float, max_connections: int, verify: bool | str = True) -> None:
        client: Any = session.client(
            "kinesis", region_name=region, endpoint_url=endpoint_url, verify=verify,
            config=Config(connect_timeout=connect_timeout, read_timeout=read_timeout, max_pool_connections=max_connections,
                          retries={"total_max_attempts": 1, "mode": "standard"}),
        )
        # The boto3 path of KinesisService, reused per stream (it maps every error the same way).
        self._client = client
        self._services: dict[str, KinesisService] = {}

    def _service(self, stream: str) -> KinesisService:
        service = self._services.get(stream)
        if service is None:
            service = KinesisService.__new__(KinesisService)
            service.stream = stream
            service.client = self._client
            service._records_shape = self._client.meta.service_model.operation_model("PutRecords").input_shape
            self._services[stream] = service
        return service

    def put_records(self, stream: str, records: Sequence[WireRecord]) -> PutOutcome:
        return self._service(stream).put_records(records)  # type: ignore[arg-type]

    def close(self) -> None:
        self._client.close()
