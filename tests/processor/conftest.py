"""Processor fixtures: Lambda Kinesis events built as AWS documents them, a Lambda context, moto, fakes."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from moto.server import ThreadedMotoServer

from infra.settings import StackSettings
from processor import clients
from processor.telemetry import SERVICE
from tests.fakes import FakeAwsServer, Handler

REGION = "eu-central-2"  # moto's state is process-wide: a region no other test folder uses
ACCOUNT = "123456789012"
STREAM_ARN = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/tweet-producer-Stream"
SHARD = "shardId-000000000000"
ARRIVAL = 1_767_268_800.123  # 2026-01-01T12:00:00.123Z
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-not-a-secret"}

_sequence = itertools.count(1)


def kinesis_record(
    data: bytes | dict[str, Any],
    *,
    sequence_number: str | None = None,
    partition_key: str = "pk",
    arrival: float = ARRIVAL,
    raw_base64: str | None = None,
) -> dict[str, Any]:
    """One record of a Lambda Kinesis event, shaped as the Lambda developer guide documents it."""
    if isinstance(data, dict):
        data = json.dumps(data, ensure_ascii=False).encode("utf-8")
    seq = sequence_number or f"4959{next(_sequence):052d}"
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": seq,
            "data": raw_base64 if raw_base64 is not None else base64.b64encode(data).decode("ascii"),
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{SHARD}:{seq}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/lambda-role",
        "awsRegion": REGION,
        "eventSourceARN": STREAM_ARN,
    }


def kinesis_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def x_v2(tweet_id: str, text: str, username: str = "user_1", author_id: str = "1001", **data: Any) -> dict[str, Any]:
    """An X API v2 filtered-stream line with its author expanded."""
    return {
        "data": {"id": tweet_id, "text": text, "author_id": author_id, "created_at": "2026-01-01T11:59:58.000Z", "lang": "en"}
        | data,
        "includes": {"users": [{"id": author_id, "name": "Display Name", "username": username}]},
        "matching_rules": [{"id": "1", "tag": "test"}],
    }


@dataclass
class FakeContext:
    """The parts of Lambda's context object the processor reads."""

    remaining_ms: int = 60_000
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"
    function_name: str = "tweet-producer-DDBEventProcessor"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def context() -> FakeContext:
    return FakeContext()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Dummy credentials and region; call the result with an endpoint URL to point the processor at it."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_EXECUTION_ENV", "DEAD_LETTER_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)

    def point_at(endpoint_url: str) -> None:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint_url)
        clients.reset_clients()

    clients.reset_clients()
    yield point_at
    clients.reset_clients()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class MotoStack:
    """A fresh table (named and keyed by infra.settings) and dead-letter queue in moto."""

    url: str
    settings: StackSettings
    queue_url: str

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, **_boto_credentials())

    def items(self) -> list[dict[str, Any]]:
        deserializer = TypeDeserializer()
        pages = self.client("dynamodb").get_paginator("scan").paginate(TableName=self.settings.table_name)
        items = [{k: deserializer.deserialize(v) for k, v in item.items()} for page in pages for item in page["Items"]]
        return sorted(items, key=lambda i: (i["Username"], i["Id"]))

    def dead_letters(self) -> list[dict[str, Any]]:
        sqs = self.client("sqs")
        found: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture
def moto_stack(moto_url: str, aws_env: Callable[[str], None], monkeypatch: pytest.MonkeyPatch) -> MotoStack:
    """The processor's environment pointed at moto, with its own table and queue (stack settings' names/keys)."""
    settings = StackSettings(name=f"t{uuid.uuid4().hex[:12]}")
    stack = MotoStack(moto_url, settings, queue_url="")
    dynamodb = stack.client("dynamodb")
    table = settings.table
    dynamodb.create_table(
        TableName=settings.table_name,
        KeySchema=[{"AttributeName": table.hash_key, "KeyType": "HASH"}, {"AttributeName": table.range_key, "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": table.hash_key, "AttributeType": "S"},
            {"AttributeName": table.range_key, "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    stack.queue_url = stack.client("sqs").create_queue(QueueName=settings.dead_letter_queue_name)["QueueUrl"]
    for name, value in settings.processor_environment(stack.queue_url).items():
        monkeypatch.setenv(name, value)
    aws_env(moto_url)
    return stack


@pytest.fixture
def fake_dynamodb(
    aws_env: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Handler], FakeAwsServer]]:
    """Start a FakeAwsServer with the given answers and point the processor's DynamoDB and SQS at it."""
    started: list[FakeAwsServer] = []

    def start(handler: Handler) -> FakeAwsServer:
        fake = FakeAwsServer(handler).start()
        started.append(fake)
        monkeypatch.setenv("TABLE_NAME", "fake-EventData")
        monkeypatch.delenv("DEAD_LETTER_QUEUE_URL", raising=False)
        aws_env(fake.endpoint_url)
        return fake

    yield start
    for fake in started:
        fake.stop()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def processor_logs() -> Iterator[list[logging.LogRecord]]:
    """The processor's log records (its logger does not propagate, so caplog cannot see them)."""
    collect = _Collect()
    logging.getLogger(SERVICE).addHandler(collect)
    try:
        yield collect.records
    finally:
        logging.getLogger(SERVICE).removeHandler(collect)
