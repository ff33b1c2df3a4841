"""The start-up check: the stream exists, this sink's credentials may describe it, and it takes writes.

DescribeStreamSummary is the probe: the producer's IAM policy allows it (infra/producer.py) and it answers
AccessDenied, ResourceNotFound or an unusable status before a single record is put. A transient answer
(network error, throttling, 5xx, a stream still being created) is retried with backoff for at most
STARTUP_CHECK_TIMEOUT_S; then start-up fails, like it fails at once for a permanent one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from sinks.base import SinkEvents, SinkUnavailable
from sinks.kinesis.config import KinesisSinkConfig
from sinks.kinesis.retry import Decision
from sinks.kinesis.service import FailureKind, KinesisService, PutOutcome, PutResponse, StreamSummary, classify

# Total time the check may spend, retries included: long enough for a blip, short enough that a service
# manager sees a failed start promptly (and restarts it) when the network or endpoint is really down.
STARTUP_CHECK_TIMEOUT_S = 20.0
# Connect and read timeouts of each DescribeStreamSummary (the sink's own are used when shorter).
CHECK_ATTEMPT_TIMEOUT_S = 5.0
CHECK_BACKOFF_INITIAL_S = 0.25
CHECK_BACKOFF_MAX_S = 4.0
# Statuses in which PutRecords works; CREATING will become ACTIVE, the others (DELETING) never will.
WRITABLE_STATUSES = frozenset({"ACTIVE", "UPDATING"})
TRANSIENT_STATUSES = frozenset({"CREATING"})


class _Transient(Exception):
    """A failure worth another attempt while the check's time lasts."""


def describe_target(service: KinesisService) -> str:
    """The stream, region and endpoint the sink writes to, as error messages name them."""
    return f"kinesis stream {service.stream!r} in region {service.region or '(none)'} at {service.endpoint}"


def check_stream(
    service: KinesisService,
    config: KinesisSinkConfig,
    timeout_s: float = STARTUP_CHECK_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> StreamSummary:
    """The stream's summary if it can take this sink's records; otherwise raise SinkUnavailable saying why."""
    client = service.client_with(
        min(config.connect_timeout, CHECK_ATTEMPT_TIMEOUT_S),
        min(config.read_timeout, CHECK_ATTEMPT_TIMEOUT_S),
        config.endpoint_url,
    )
    give_up_at = time.monotonic() + timeout_s
    attempt = 0
    try:
        while True:
            attempt += 1
            try:
                return _probe(service, client, config)
            except _Transient as exc:
                delay = min(CHECK_BACKOFF_MAX_S, CHECK_BACKOFF_INITIAL_S * 2 ** (attempt - 1))
                if time.monotonic() + delay >= give_up_at:
                    raise SinkUnavailable(
                        f"{describe_target(service)}: {exc} (still failing after {attempt} attempts within {timeout_s:g}s)"
                    ) from None
                sleep(delay)
            except SinkUnavailable as exc:
                raise SinkUnavailable(f"{describe_target(service)}: {exc}") from None
    finally:
        client.close()


def _probe(service: KinesisService, client: Any, config: KinesisSinkConfig) -> StreamSummary:
    try:
        summary = service.describe(client)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(error.get("Code") or f"HTTP{status}")
        problem = f"DescribeStreamSummary failed: {code}: {error.get('Message', '')}"
        if classify(code, status) in (FailureKind.THROTTLED, FailureKind.SERVER_ERROR):
            raise _Transient(problem) from None
        raise SinkUnavailable(problem) from None
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise SinkUnavailable(f"no usable AWS credentials ({exc}); set a profile or the standard AWS chain") from None
    except BotoCoreError as exc:  # refused, reset, timed out, DNS
        raise _Transient(f"DescribeStreamSummary got no answer: {type(exc).__name__}: {exc}") from None
    if summary.status in TRANSIENT_STATUSES:
        raise _Transient(f"stream status is {summary.status}")
    if summary.status not in WRITABLE_STATUSES:
        raise SinkUnavailable(f"stream status is {summary.status or '(none)'}, not one of {', '.join(sorted(WRITABLE_STATUSES))}")
    if summary.max_record_bytes is not None and config.max_record_bytes > summary.max_record_bytes:
        raise SinkUnavailable(
            f"max_record_bytes {config.max_record_bytes} exceeds the stream's maximum record size "
            f"{summary.max_record_bytes} bytes (MaxRecordSizeInKiB): lower it or raise the stream's"
        )
    return summary


class HealthTracker:
    """Unhealthy while the stream refuses everyone; healthy again at the first request it answers normally.

    Thread-safe: several requests are in flight; each transition is reported once.
    """

    def __init__(self, events: SinkEvents, target: str) -> None:
        self.events = events
        self.target = target
        self.unhealthy: str | None = None  # the error code the stream refused everything with, while it does
        self._lock = threading.Lock()

    def update(self, outcome: PutOutcome, decision: Decision) -> None:
        with self._lock:
            if decision.unhealthy is not None:
                code, message = decision.unhealthy
                if self.unhealthy == code:
                    return
                self.unhealthy = code
                healthy, reason = False, code
                detail = f"{self.target} refuses writes: {code}: {message}; records are held and retried"
            elif isinstance(outcome, PutResponse) and self.unhealthy is not None:
                healthy, (reason, self.unhealthy) = True, (self.unhealthy, None)
                detail = f"{self.target} takes writes again"
            else:
                return
        self.events.sink_health(healthy=healthy, reason=reason, detail=detail)
