"""boto3 clients, created lazily from the environment on first use and shared by every invocation.

boto3 reads region, credentials and endpoints (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_DYNAMODB,
AWS_ENDPOINT_URL_SQS) from the environment when a client is created, so the embedded stack sets those
variables before the first invocation. Tests that change them call `reset_clients()` afterwards.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
from botocore.config import Config

# A hung connection must not eat the invocation: each attempt is bounded, and the writer's own
# deadline-aware retry loop (processor/writer.py) decides whether another attempt fits.
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0
# Chunks are written in parallel and several invocations may run in one process (embedded stack).
MAX_POOL_CONNECTIONS = 32
# DynamoDB: no botocore retries, the writer retries with backoff bounded by the remaining time.
_DYNAMODB_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    max_pool_connections=MAX_POOL_CONNECTIONS,
    retries={"max_attempts": 1, "mode": "standard"},
)
# SQS (dead letters only): botocore's standard retries are enough; a failure is reported as a batch failure.
SQS_MAX_ATTEMPTS = 3
_SQS_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    max_pool_connections=MAX_POOL_CONNECTIONS,
    retries={"max_attempts": SQS_MAX_ATTEMPTS, "mode": "standard"},
)

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def _client(service: str, config: Config) -> Any:
    with _lock:  # boto3 sessions are not thread-safe while they create clients
        client = _clients.get(service)
        if client is None:
            client = boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]
            _clients[service] = client
        return client


def dynamodb() -> Any:
    """The DynamoDB client (created on first use from the current environment)."""
    return _client("dynamodb", _DYNAMODB_CONFIG)


def sqs() -> Any:
    """The SQS client for the dead-letter queue (created on first use from the current environment)."""
    return _client("sqs", _SQS_CONFIG)


def reset_clients() -> None:
    """Forget the cached clients so the next use builds them from the environment as it is now."""
    with _lock:
        _clients.clear()
