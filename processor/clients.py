"""boto3 clients: built from the environment in Lambda, or handed over by a host that runs the processor.

In Lambda, boto3 reads region, credentials and endpoints from the function's environment when a client is
created: `EnvironmentClients` creates each client lazily on first use and shares it between invocations
(tests that change the environment call `reset_clients()` afterwards). A host process (the embedded stack)
builds its own clients with an explicit endpoint and credentials instead and passes them in
(`GivenClients`, see `processor.handler.make_handler`), so it never has to touch its own environment.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
from botocore.config import Config

# A hung connection must not eat the invocation: each attempt is bounded, and the writer's own
# deadline-aware retry loop (processor/writer.py) decides whether another attempt fits.
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0
# Chunks are written in parallel and several invocations may run in one process (embedded stack).
MAX_POOL_CONNECTIONS = 32
# DynamoDB: no botocore retries, the writer retries with backoff bounded by the remaining time.
DYNAMODB_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    max_pool_connections=MAX_POOL_CONNECTIONS,
    retries={"max_attempts": 1, "mode": "standard"},
)
# SQS (dead letters only): botocore's standard retries are enough; a failure is reported as a batch failure.
SQS_MAX_ATTEMPTS = 3
SQS_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    max_pool_connections=MAX_POOL_CONNECTIONS,
    retries={"max_attempts": SQS_MAX_ATTEMPTS, "mode": "standard"},
)


class ProcessorClients(Protocol):
    """Where an invocation gets its clients; SQS is asked for only when a dead letter goes to the queue."""

    def dynamodb(self) -> Any: ...

    def sqs(self) -> Any: ...


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
    return _client("dynamodb", DYNAMODB_CONFIG)


def sqs() -> Any:
    """The SQS client for the dead-letter queue (created on first use from the current environment)."""
    return _client("sqs", SQS_CONFIG)


def reset_clients() -> None:
    """Forget the cached clients so the next use builds them from the environment as it is now."""
    with _lock:
        _clients.clear()


class EnvironmentClients:
    """Lambda's way: clients built from the environment on first use and shared by every invocation."""

    def dynamodb(self) -> Any:
        return dynamodb()

    def sqs(self) -> Any:
        return sqs()


@dataclass(frozen=True)
class GivenClients:
    """Clients the host built (endpoint, region and credentials chosen by it); `sqs` only with a queue."""

    dynamodb_client: Any
    sqs_client: Any | None = None

    def dynamodb(self) -> Any:
        return self.dynamodb_client

    def sqs(self) -> Any:
        if self.sqs_client is None:
            raise RuntimeError("the processor has a dead-letter queue but was given no SQS client")
        return self.sqs_client
