"""One PutRecords call -> a typed outcome: which entries failed and with what code, or how the call failed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from sinks.kinesis.config import KinesisSinkConfig
from sinks.kinesis.records import KinesisEntry

# Whole-call and per-entry error codes by what they mean; any other code is a permanent client error
# (ValidationException, AccessDeniedException, ResourceNotFoundException, KMS*Exception, ...).
THROTTLING_ERROR_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "LimitExceededException",
        "KMSThrottlingException",
    }
)
SERVER_ERROR_CODES = frozenset(
    {
        "InternalFailure",
        "InternalFailureException",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# Expired temporary credentials: botocore refreshes role/SSO credentials, so a later attempt can pass.
EXPIRED_CREDENTIALS_CODES = frozenset({"ExpiredTokenException", "ExpiredToken", "RequestExpired"})
RETRIABLE_ERROR_CODES = THROTTLING_ERROR_CODES | SERVER_ERROR_CODES | EXPIRED_CREDENTIALS_CODES
MALFORMED_RESPONSE = "MalformedResponse"  # a 200 answer whose Records do not match the request
_HTTP_TOO_MANY_REQUESTS = 429
_HTTP_SERVER_ERROR = 500


class FailureKind(Enum):
    """Why a whole PutRecords call failed; every kind but PERMANENT may pass on a later attempt."""

    THROTTLED = "throttled"
    SERVER_ERROR = "server_error"
    NETWORK = "network"  # connection refused/reset, timeouts: no answer at all
    CREDENTIALS = "credentials"  # missing or expired credentials
    MALFORMED = "malformed_response"
    PERMANENT = "permanent"  # the request itself is wrong or forbidden: sending it again cannot work


@dataclass(frozen=True)
class EntryFailure:
    position: int
    code: str
    message: str

    @property
    def retriable(self) -> bool:
        return self.code in RETRIABLE_ERROR_CODES


@dataclass(frozen=True)
class PutResponse:
    """The call completed; `failures` lists the entries Kinesis did not accept (FailedRecordCount)."""

    failures: tuple[EntryFailure, ...]
    latency_s: float


@dataclass(frozen=True)
class CallFailed:
    """The call as a whole failed: no entry was accepted."""

    code: str
    message: str
    kind: FailureKind
    latency_s: float

    @property
    def retriable(self) -> bool:
        return self.kind is not FailureKind.PERMANENT


PutOutcome = PutResponse | CallFailed


def classify(code: str, status: int) -> FailureKind:
    """The kind of an AWS error answer, by its code first and its HTTP status when the code is unknown."""
    if code in THROTTLING_ERROR_CODES or status == _HTTP_TOO_MANY_REQUESTS:
        return FailureKind.THROTTLED
    if code in EXPIRED_CREDENTIALS_CODES:
        return FailureKind.CREDENTIALS
    if code in SERVER_ERROR_CODES or status >= _HTTP_SERVER_ERROR:
        return FailureKind.SERVER_ERROR
    return FailureKind.PERMANENT


class KinesisService:
    """Owns the boto3 client; botocore's own retries are off because the sink decides about retries."""

    def __init__(self, config: KinesisSinkConfig) -> None:
        if config.stream is None:
            raise ValueError("the kinesis sink needs a stream name")
        self.stream = config.stream
        if config.static_credentials is None:
            session = boto3.Session(profile_name=config.profile, region_name=config.region)
        else:  # the embedded stack: its dummy keys, and no AWS_PROFILE from the environment (it may not exist)
            key, secret = config.static_credentials
            no_env_profile = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
            session = boto3.Session(
                aws_access_key_id=key, aws_secret_access_key=secret, region_name=config.region, botocore_session=no_env_profile
            )
        self.client: Any = session.client(
            "kinesis",
            endpoint_url=config.endpoint_url,
            config=Config(
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                retries={"total_max_attempts": 1, "mode": "standard"},
            ),
        )

    def put_records(self, entries: Sequence[KinesisEntry]) -> PutOutcome:
        started = time.monotonic()
        try:
            response = self.client.put_records(
                StreamName=self.stream,
                Records=[{"Data": e.record.data, "PartitionKey": e.partition_key} for e in entries],
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = str(error.get("Code") or f"HTTP{status}")
            return CallFailed(code, str(error.get("Message", "")), classify(code, status), time.monotonic() - started)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            # Credentials can appear (instance role, rotated file): keep the records and keep trying.
            return CallFailed("NoCredentials", str(exc), FailureKind.CREDENTIALS, time.monotonic() - started)
        except ParamValidationError as exc:
            # botocore refused to build the request (e.g. an empty partition key): resending the same entries
            # can never work, so they are dead-lettered rather than retried until shutdown.
            return CallFailed("ParamValidationError", str(exc), FailureKind.PERMANENT, time.monotonic() - started)
        except BotoCoreError as exc:  # connection refused/reset, timeouts, DNS: the network may come back
            return CallFailed(type(exc).__name__, str(exc), FailureKind.NETWORK, time.monotonic() - started)
        latency = time.monotonic() - started
        results = response.get("Records") or []
        if len(results) != len(entries):
            # Without one result per entry we cannot tell which entries were accepted: sending them all again
            # risks duplicates, treating the gap as accepted would lose records.
            detail = f"{len(results)} results for {len(entries)} records"
            return CallFailed(MALFORMED_RESPONSE, detail, FailureKind.MALFORMED, latency)
        # Per-entry ErrorCode is authoritative; FailedRecordCount is only a summary of it.
        failures = tuple(
            EntryFailure(position, str(result["ErrorCode"]), str(result.get("ErrorMessage", "")))
            for position, result in enumerate(results)
            if result.get("ErrorCode")
        )
        return PutResponse(failures, latency)

    def close(self) -> None:
        self.client.close()
